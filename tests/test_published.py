"""The published-tokenizer interface: registration, checkpoint reading, strict loading."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vqbench.errors import VQBenchError
from vqbench.published import (
    PublishedTokenizer,
    get_adapter_class,
    load_exact,
    read_checkpoint,
    register_adapter,
    state_dict_of,
)


class _Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, width, 1)
        self.decoder = nn.Conv2d(width, 3, 1)


def test_read_checkpoint_reads_torch_and_safetensors(tmp_path):
    state = _Net().state_dict()
    torch.save({"state_dict": state, "global_step": 3}, tmp_path / "a.ckpt")
    save_file(state, tmp_path / "a.safetensors")
    loaded = state_dict_of(read_checkpoint(tmp_path / "a.ckpt"), ("state_dict",))
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    direct = state_dict_of(read_checkpoint(tmp_path / "a.safetensors"), ("state_dict",))
    assert set(direct) == set(state)


class _NotATensor:
    pass


def test_read_checkpoint_refuses_pickled_objects_unless_trusted(tmp_path):
    torch.save({"model": _Net().state_dict(), "extra": _NotATensor()}, tmp_path / "p.pt")
    with pytest.raises(VQBenchError, match="--trust-checkpoint"):
        read_checkpoint(tmp_path / "p.pt")
    assert "model" in read_checkpoint(tmp_path / "p.pt", trust=True)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.pt", None, "does not exist"),
        ("w.txt", b"x", "not a weights file"),
        ("cut.pt", "truncate", "damaged"),
        ("junk.safetensors", b"\x00" * 20, "damaged"),
        ("garbage.pt", b"garbage" * 20, "damaged \\(Unsupported operand"),
        ("list.pt", "list", "not a state dict"),
    ],
)
def test_read_checkpoint_bad_files_are_one_line(tmp_path, name, content, message):
    file = tmp_path / name
    if content == "truncate":
        torch.save(_Net().state_dict(), file)
        file.write_bytes(file.read_bytes()[:100])
    elif content == "list":
        torch.save([1, 2], file)
    elif content is not None:
        file.write_bytes(content)
    with pytest.raises(VQBenchError, match=message) as err:
        read_checkpoint(file)
    assert "\n" not in str(err.value)


def test_state_dict_of_names_the_keys_it_looked_for():
    with pytest.raises(VQBenchError, match="'model'.*top-level keys: epoch"):
        state_dict_of({"epoch": 1}, ("model",))


def test_load_exact_names_the_first_mismatch():
    state = _Net().state_dict()
    with pytest.raises(VQBenchError, match="'decoder.weight' has shape .* check the arch"):
        load_exact(_Net(), {**state, "decoder.weight": torch.zeros(3, 5, 1, 1)})
    with pytest.raises(VQBenchError, match="key 'encoder.bias' is missing"):
        load_exact(_Net(), {k: v for k, v in state.items() if k != "encoder.bias"})
    with pytest.raises(VQBenchError, match="unexpected key 'loss.w'"):
        load_exact(_Net(), {**state, "loss.w": torch.zeros(1)})
    net = _Net()
    load_exact(net, {**state, "loss.w": torch.zeros(1)}, ignore=("loss.",))
    assert torch.equal(net.encoder.weight, state["encoder.weight"])


def test_an_adapter_must_name_its_source():
    class Nameless(PublishedTokenizer):
        pass

    with pytest.raises(VQBenchError, match="must name the code it follows"):
        register_adapter("nameless_test")(Nameless)
    with pytest.raises(VQBenchError, match="unknown tokenizer adapter"):
        get_adapter_class("no_such_adapter")
