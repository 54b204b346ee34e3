"""Host synchronisations in a steady-state training step, counted on CPU.

On CUDA the host waits for the GPU whenever it reads a tensor's value (`item`, `bool`, `int`,
`float`, `tolist`), when an op's output size depends on values (`nonzero`, `bincount`,
`unique`, boolean indexing) and when it copies a Python literal to the device (`torch.tensor`
with a device). On CPU none of these waits, but the same aten calls are made, so they are
counted here, for every quantizer, in the windows of `SteadyStateWindows` (every step but the
log, checkpoint and epoch-end steps). The CUDA test (`tests/cuda/test_train_cuda.py`) checks
the same on a GPU with `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import traceback
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.engine_helpers import SteadyStateWindows, small_config
from vqbench.config import parse_run_config
from vqbench.train import TrainOptions, train

#: aten ops that wait for the device on CUDA (or copy a host literal to it).
SYNC_OPS = {
    "_local_scalar_dense",  # item(), bool(), int(), float()
    "nonzero",
    "bincount",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "masked_select",
    "repeat_interleave",
    "lift_fresh",  # torch.tensor(literal)
}


class SyncCounter(TorchDispatchMode):
    """Counts `SYNC_OPS`, boolean-mask indexing and `Tensor.tolist` while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()
        self._tolist = torch.Tensor.tolist

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS and not _optimizer_step_counter(name):
            self.counts[name] += 1
        elif name in ("index", "index_put", "index_put_") and _has_bool_index(args):
            self.counts[f"{name} (boolean mask)"] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        counts, original = self.counts, self._tolist

        def tolist(tensor):
            counts["tolist"] += 1
            return original(tensor)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)


def _optimizer_step_counter(name: str) -> bool:
    """Adam reads its step counter with `item()`: a CPU tensor on every device (on CUDA too,
    unless fused, where it stays on the GPU and is never read), so no GPU wait."""
    return name == "_local_scalar_dense" and any(
        "/torch/optim/" in frame.filename for frame in traceback.extract_stack(limit=12)
    )


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or [])


def count_steady_state_syncs(name: str, tmp_path, monkeypatch, **sections) -> tuple[Counter, int]:
    """(sync ops per kind, number of windows) over the steady-state steps of a short run."""
    counter = SyncCounter()
    windows = SteadyStateWindows(counter.__enter__, lambda: counter.__exit__(None, None, None))
    windows.install(monkeypatch)
    config = small_config(name, steps=6, batch=4, **sections)
    config["train"].update(log_every=6, checkpoint_every=100)
    options = TrainOptions(device="cpu", show_progress=False)
    train(parse_run_config(config, "test"), tmp_path / name, options)
    return counter.counts, windows.windows


QUANTIZERS = ["vanilla", "ema", "fc", "fsq", "lfq", "vqgan_lc", "simvq", "group_vq"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")


CASES = [(name, "fp32") for name in QUANTIZERS] + [
    pytest.param(name, "bf16", marks=[] if name == "lfq" else [pytest.mark.slow])
    for name in QUANTIZERS
]


@pytest.mark.parametrize(("name", "precision"), CASES)
def test_a_steady_state_step_makes_no_host_synchronisation(name, precision, tmp_path, monkeypatch):
    counts, windows = count_steady_state_syncs(
        name, tmp_path, monkeypatch, train={"precision": precision}
    )
    assert windows == 4  # steps 3 to 6 of 6 (2 warm-up steps)
    assert not counts, f"host synchronisations in steady-state steps: {dict(counts)}"


def test_the_counter_sees_a_synchronisation(tmp_path, monkeypatch):
    """The check can fail: a quantizer that reads a value on the host is caught."""
    from vqbench_quantizers.vanilla import VanillaVQ

    from vqbench.quantizer import ExplicitCodebookQuantizer

    def quantize_tokens(self, z):
        out = ExplicitCodebookQuantizer.quantize_tokens(self, z)
        if float(out.loss.detach()) > 1e9:  # a host read, as a careless plugin would write
            raise AssertionError
        return out

    monkeypatch.setattr(VanillaVQ, "quantize_tokens", quantize_tokens, raising=False)
    counts, windows = count_steady_state_syncs("vanilla", tmp_path, monkeypatch)
    assert counts["_local_scalar_dense"] == windows


def test_the_certified_search_synchronises_once_per_call(tmp_path, monkeypatch):
    params = {"codebook_size": 64, "dim": 16, "search_precision": "tf32"}
    counts, windows = count_steady_state_syncs(
        "vanilla", tmp_path, monkeypatch, quantizer={"name": "vanilla", "params": params}
    )
    assert counts == Counter({"nonzero": windows})
