"""`sf_diveq` beyond the reference fixtures: hand-worked segments and initialisation, bad
input, and a run resumed inside the averaging window that continues identically."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.engine_helpers import small_config
from vqbench import VQBenchError, create_quantizer

CODES = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]])


def test_tokens_are_segments_decoded_to_their_midpoints_at_inference():
    q = create_quantizer("sf_diveq", codebook_size=3, dim=2).eval()
    with torch.no_grad():
        q.embedding.copy_(CODES)
    assert q.codebook_size == 2 and q.index_sizes() == [2]
    assert torch.equal(q.codebook(), torch.tensor([[1.0, 0.0], [2.0, 1.0]]))
    out = q.quantize_tokens(torch.tensor([[0.9, -0.5], [2.5, 1.2], [1.2, 0.4]]))
    assert out.indices.tolist() == [0, 1, 0]  # nearest midpoint: (1,0), (2,1), (1,0)
    assert torch.equal(out.z_q, q.decode_tokens(out.indices))


def test_curve_inference_projects_onto_the_nearest_segment_by_hand():
    q = create_quantizer("sf_diveq", codebook_size=3, dim=2, inference="curve").eval()
    with torch.no_grad():
        q.embedding.copy_(CODES)
    out = q.quantize_tokens(torch.tensor([[1.5, -1.0], [2.5, 1.5], [3.0, -1.0]]))
    assert out.indices.tolist() == [0, 1, 0]
    assert torch.equal(out.z_q, torch.tensor([[1.5, 0.0], [2.0, 1.5], [2.0, 0.0]]))


def test_training_value_is_the_dithered_point_of_the_chosen_segment():
    q = create_quantizer("sf_diveq", codebook_size=3, dim=2, skip_steps=0, average_steps=0)
    with torch.no_grad():
        q.embedding.copy_(CODES)
    q.draw_dither = lambda segments, like: torch.tensor([[0.25], [0.5]])
    out = q.train().quantize_tokens(torch.tensor([[0.4, 0.1], [2.2, 0.9]]))
    assert out.indices.tolist() == [0, 1]  # points (0.5, 0) and (2, 1)
    assert torch.equal(out.z_q, torch.tensor([[0.5, 0.0], [2.0, 1.0]]))


def test_pooled_latents_initialise_the_codebook_by_chunk_means():
    """skip 3, average 2: steps 2 and 3 are pooled (8 tokens), the codebook becomes the means
    of 3 chunks of 2 (the last 2 tokens dropped) after step 2; step 3 quantizes."""
    q = create_quantizer("sf_diveq", codebook_size=3, dim=1, skip_steps=3, average_steps=2)
    q.train()
    batches = [torch.full((4, 1), -9.0), torch.arange(4.0)[:, None], torch.arange(4.0, 8)[:, None]]
    outs = []
    for batch in batches[:2]:
        outs.append(q.quantize_tokens(batch))
        q.after_optimizer_step()
    assert all(torch.equal(o.z_q, b) for o, b in zip(outs, batches[:2], strict=True))
    assert q.pool.shape == (0, 1)  # emptied once used
    # pooled at t >= 3 - 2 = 1 already: [-9]*4 + [0..3] -> chunks of 2
    assert q.embedding.flatten().tolist() == [-9.0, -9.0, 0.5]
    out = q.quantize_tokens(batches[2])
    assert not torch.equal(out.z_q, batches[2])


def test_too_few_pooled_latents_are_one_line():
    q = create_quantizer("sf_diveq", codebook_size=8, dim=2, skip_steps=2, average_steps=1)
    q.train().quantize_tokens(torch.randn(3, 2))
    with pytest.raises(VQBenchError, match="raise average_steps"):
        q.after_optimizer_step()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"skip_steps": 2, "average_steps": 3}, "average_steps=3 exceeds skip_steps=2"),
        ({"codebook_size": 2}, "codebook_size"),
        ({"estimator": "diveq"}, "brings its own gradient"),
    ],
)
def test_bad_parameters_are_one_line(params, expected):
    with pytest.raises(VQBenchError, match=expected) as err:
        create_quantizer("sf_diveq", dim=4, **params)
    assert "\n" not in str(err.value)


def test_a_run_resumed_inside_the_averaging_window_continues_identically(tmp_path):
    """Skip 4, average 2: a checkpoint after step 2 holds the pool of one step; a fresh trainer
    loaded from it initialises the same codebook and trains to the same weights."""
    from vqbench import distributed
    from vqbench.config import parse_run_config
    from vqbench.train import Trainer

    raw = small_config("sf_diveq")
    raw["quantizer"]["params"].update(codebook_size=9, skip_steps=4, average_steps=2)
    config = parse_run_config(raw, "test")
    world = distributed.setup("cpu")
    x = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1]

    def step(trainer, i):
        torch.manual_seed(100 + i)  # the checkpoint restores the RNG; here each step seeds it
        trainer.train_step(x)

    a = Trainer.build(config, world, total_steps=6)
    initial = a.state.model.quantizer.embedding.detach().clone()
    for i in range(2):
        step(a, i)
    assert a.state.model.quantizer.pool.shape[0] > 0  # inside the window
    weights = a.state.weights()
    files = {}
    for name, tensors in weights.items():  # as a checkpoint writes and reads them
        path = str(tmp_path / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        files[name] = load_file(path)
    b = Trainer.build(config, world, total_steps=6)
    buffer = io.BytesIO()
    torch.save(a.state.state_dict(), buffer)  # as a checkpoint's state.pt is written and read
    b.state.load_state_dict(files, torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert torch.equal(b.state.model.quantizer.pool, a.state.model.quantizer.pool)
    for i in range(2, 6):
        step(a, i)
        step(b, i)
        if i == 2:  # the initialising step: the model EMA's quantizer restarts from it
            live, ema = a.state.model.quantizer, a.state.ema.model.quantizer
            assert torch.equal(ema.embedding, live.embedding)
    qa = a.state.model.quantizer
    assert int(qa.steps) == 6 and qa.pool.shape[0] == 0
    assert not torch.allclose(qa.embedding, initial, atol=0.1)  # initialised from the pool
    for key, value in a.state.model.state_dict().items():
        assert torch.equal(value, b.state.model.state_dict()[key]), key
