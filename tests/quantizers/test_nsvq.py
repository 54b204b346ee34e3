"""`nsvq`: the kernel codebook loss against its N x K definition, the scaled straight-through
gradient by hand, the bandwidth schedule on the trainer's steps and across a resume."""

from __future__ import annotations

import io

import pytest
import torch
import vqbench_quantizers.nsvq as nsvq

from tests.engine_helpers import small_config
from vqbench import VQBenchError, create_quantizer


def brute_force_kernel_loss(z, codes, tau, weight):
    """The definition: an explicit `(N, K)` weight matrix in float64 (winner 1, others
    `min(1, weight K softmax(-||z - e||^2 / tau))`), `sum w ||sg(z) - e||^2 / (N dim)`."""
    z, codes = z.double(), codes.double()
    dist = torch.cdist(z, codes.detach()) ** 2
    w = (weight * codes.shape[0] * torch.softmax(-dist / tau, 1)).clamp(max=1.0)
    w[torch.arange(len(z)), dist.argmin(1)] = 1.0
    return (w * torch.cdist(z, codes) ** 2).sum() / z.numel()


@pytest.mark.parametrize("tau", [1.0, 0.05, 1e-8])
def test_kernel_loss_and_its_gradient_equal_the_definition(tau, monkeypatch):
    monkeypatch.setattr(nsvq, "KERNEL_BLOCK", 64 * 5)  # several blocks of 5 tokens
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(23, 3, generator=generator)
    codes = (torch.randn(64, 3, generator=generator) * 0.7).requires_grad_(True)
    winners = torch.cdist(z, codes).argmin(1)
    ours = nsvq.kernel_codebook_loss(z, codes, winners, tau, 0.05)
    (grad,) = torch.autograd.grad(ours, codes)
    codes64 = codes.detach().double().requires_grad_(True)
    expected = brute_force_kernel_loss(z, codes64, tau, 0.05)
    (expected_grad,) = torch.autograd.grad(expected, codes64)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)
    assert (expected_grad.abs().sum(1) > 0).sum() > (25 if tau == 1.0 else 0)  # unchosen move


def test_scaled_straight_through_passes_2_over_n_dim_to_the_code():
    """By hand: the value is the code, the input's gradient the identity, and the chosen
    code receives `2 codebook_weight / (N dim)` of the decoder's gradient."""
    q = create_quantizer("nsvq", codebook_size=2, dim=2, codebook_weight=0.5).eval()
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [4.0, 4.0]]))
    z = torch.tensor([[0.1, 0.2], [3.9, 4.2], [0.3, -0.1]]).t().reshape(1, 2, 1, 3)
    z.requires_grad_(True)
    upstream = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).t().reshape(1, 2, 1, 3)
    out = q(z)
    assert torch.equal(out.z_q, q.embedding[out.indices.flatten()].t().reshape(1, 2, 1, 3))
    (out.z_q * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)
    a = 2 * 0.5 / 6
    torch.testing.assert_close(q.embedding.grad, torch.tensor([[6.0, 8.0], [3.0, 4.0]]) * a)


def test_code_gradient_none_is_the_plain_estimator_and_scaled_refuses_another():
    q = create_quantizer("nsvq", codebook_size=4, dim=2, code_gradient="none").eval()
    z = torch.randn(1, 2, 2, 2, requires_grad=True)
    (q(z).z_q.sum()).backward()
    assert q.embedding.grad is None  # nothing but the loss reaches the codes
    create_quantizer("nsvq", codebook_size=4, dim=2, code_gradient="none", estimator="rotation")
    with pytest.raises(VQBenchError, match="code_gradient='scaled'.*code_gradient: none"):
        create_quantizer("nsvq", codebook_size=4, dim=2, estimator="rotation")


def test_bandwidth_follows_the_optimiser_steps_only():
    q = create_quantizer("nsvq", codebook_size=8, dim=2, decay_every=3, bandwidth=2.0).train()
    z = torch.randn(1, 2, 2, 2)
    seen = []
    for _ in range(7):
        q(z), q(z)  # forwards (micro-batches) do not advance the schedule
        seen.append(float(q(z).stats["bandwidth"]))
        q.after_optimizer_step()
    assert seen == [2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.5] and int(q.steps) == 7
    assert "steps" in q.state_dict()


def test_a_run_resumed_mid_schedule_continues_identically():
    """Trainer steps 0-4 (bandwidth halves every 2), state saved and loaded into a fresh
    trainer, 3 more steps on both: same bandwidth, same weights. A fresh trainer that starts
    over differs (so the comparison can fail)."""
    from vqbench import distributed
    from vqbench.config import parse_run_config
    from vqbench.train import Trainer

    raw = small_config("nsvq")
    raw["quantizer"]["params"]["decay_every"] = 2
    config = parse_run_config(raw, "test")
    world = distributed.setup("cpu")
    x = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1]
    a = Trainer.build(config, world, total_steps=8)
    for _ in range(5):
        a.train_step(x)
    assert a.state.model.quantizer.bandwidth() == 0.25  # steps 4-5: 1 * 0.5^2
    buffer = io.BytesIO()
    torch.save(a.state.state_dict(), buffer)
    b = Trainer.build(config, world, total_steps=8)
    fresh = Trainer.build(config, world, total_steps=8)
    for trainer in (b, fresh):  # each its own copy (optimiser states are updated in place)
        saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
        trainer.state.load_state_dict(a.state.weights(), saved)
    fresh.state.model.quantizer.steps.zero_()  # as if the schedule had not been saved
    for _ in range(3):
        for trainer in (a, b, fresh):
            trainer.train_step(x)
        assert b.state.model.quantizer.bandwidth() == a.state.model.quantizer.bandwidth()
    assert a.state.model.quantizer.bandwidth() == 0.0625 and int(b.state.model.quantizer.steps) == 8
    for key, value in a.state.model.state_dict().items():
        assert torch.equal(value, b.state.model.state_dict()[key]), key
    codes = a.state.model.quantizer.embedding
    assert not torch.equal(codes, fresh.state.model.quantizer.embedding)
