import torch

from vqbench import create_quantizer


def test_one_step_equals_a_hand_computed_ema_update():
    q = create_quantizer("ema", codebook_size=4, dim=2, decay=0.9, eps=0.0)
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    q.embedding.copy_(codes)
    q.embed_sum.copy_(codes)
    # Three tokens go to code 0, one to code 3, none to codes 1 and 2.
    tokens = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 2.0], [9.0, 12.0]])
    z = tokens.t().reshape(1, 2, 1, 4)
    out = q.train()(z)
    q.after_optimizer_step()
    assert out.indices.reshape(-1).tolist() == [0, 0, 0, 3]
    # N_k = 0.9 * 1 + 0.1 * n_k with n = (3, 0, 0, 1); m_k = 0.9 * c_k + 0.1 * s_k.
    sizes = [0.9 + 0.3, 0.9, 0.9, 0.9 + 0.1]
    sums = [
        [0.9 * 0 + 0.1 * 0.0, 0.9 * 0 + 0.1 * 3.0],
        [9.0, 0.0],
        [0.0, 9.0],
        [0.9 * 10 + 0.1 * 9.0, 0.9 * 10 + 0.1 * 12.0],
    ]
    # eps = 0: Laplace smoothing leaves N unchanged, c_k = m_k / N_k.
    expected = torch.tensor([[s[0] / n, s[1] / n] for s, n in zip(sums, sizes)])
    torch.testing.assert_close(q.cluster_size, torch.tensor(sizes))
    torch.testing.assert_close(q.embedding, expected)
    # The loss is the commitment term alone: 0.25 * mean((sg(q) - z)^2), codes before the step.
    picked = codes[[0, 0, 0, 3]]
    torch.testing.assert_close(out.loss, 0.25 * (picked - tokens).square().mean())


def test_laplace_smoothing_with_eps():
    q = create_quantizer("ema", codebook_size=3, dim=1, decay=0.5, eps=0.1)
    q.embedding.copy_(torch.tensor([[0.0], [5.0], [10.0]]))
    q.embed_sum.copy_(q.embedding)
    q.train()(torch.tensor([[[[0.5, 1.0]]]]))  # both tokens go to code 0
    q.after_optimizer_step()
    n = torch.tensor([1.5, 0.5, 0.5])
    smoothed = (n + 0.1) / (n.sum() + 3 * 0.1) * n.sum()
    m = torch.tensor([0.5 * 0 + 0.5 * 1.5, 2.5, 5.0])
    torch.testing.assert_close(q.embedding.squeeze(1), m / smoothed)


def test_eval_mode_and_gradients_leave_the_codebook_alone():
    q = create_quantizer("ema", codebook_size=16, dim=4)
    before = q.embedding.clone()
    q.eval()(torch.randn(2, 4, 3, 3))
    q.after_optimizer_step()
    assert torch.equal(q.embedding, before)
    assert not any(p.requires_grad for p in q.parameters())


def test_dead_codes_restart_from_batch_tokens():
    q = create_quantizer("ema", codebook_size=8, dim=2, decay=0.9, dead_code_threshold=0.95)
    q.embedding.copy_(torch.randn(8, 2) + 100)  # far away: only the nearest code gets used
    q.embed_sum.copy_(q.embedding)
    z = torch.randn(1, 2, 4, 4)
    q.train()(z)
    q.after_optimizer_step()
    tokens = z.permute(0, 2, 3, 1).reshape(-1, 2)
    restarted = q.cluster_size == 0.95
    assert restarted.sum() >= 6
    for code in q.embedding[restarted]:
        assert (tokens - code).abs().sum(1).min() < 1e-6


def test_two_micro_batches_of_16_equal_one_batch_of_32():
    """Statistics accumulate over the micro-batches of a step: one EMA update per step."""
    torch.manual_seed(0)
    whole = create_quantizer("ema", codebook_size=8, dim=3, decay=0.8).train()
    parts = create_quantizer("ema", codebook_size=8, dim=3, decay=0.8).train()
    parts.load_state_dict(whole.state_dict())
    for _ in range(3):  # three optimiser steps
        z = torch.randn(32, 3, 1, 1)
        whole(z)
        whole.after_optimizer_step()
        parts(z[:16])
        parts(z[16:])
        parts.after_optimizer_step()
    torch.testing.assert_close(parts.cluster_size, whole.cluster_size)
    torch.testing.assert_close(parts.embedding, whole.embedding)
    # Updating after each micro-batch (the old behaviour) gives another codebook.
    per_micro = create_quantizer("ema", codebook_size=8, dim=3, decay=0.8).train()
    per_micro.load_state_dict(parts.state_dict())
    reference = create_quantizer("ema", codebook_size=8, dim=3, decay=0.8).train()
    reference.load_state_dict(parts.state_dict())
    z = torch.randn(32, 3, 1, 1)
    for half in (z[:16], z[16:]):
        per_micro(half)
        per_micro.after_optimizer_step()
    reference(z)
    reference.after_optimizer_step()
    assert not torch.allclose(per_micro.cluster_size, reference.cluster_size)


def test_zero_initial_cluster_size_is_tamings():
    """taming / VQGAN-LC: N_k starts at 0; a code never chosen is divided by ~eps."""
    q = create_quantizer("ema", codebook_size=2, dim=1, decay=0.9, initial_cluster_size=0.0)
    q.embedding.copy_(torch.tensor([[0.0], [100.0]]))
    q.embed_sum.copy_(q.embedding)
    q.train()(torch.tensor([[[[0.5, -0.5]]]]))
    q.after_optimizer_step()
    torch.testing.assert_close(q.cluster_size, torch.tensor([0.2, 0.0]))
    eps = 1e-5
    smoothed_unused = eps / (0.2 + 2 * eps) * 0.2
    torch.testing.assert_close(q.embedding[1], torch.tensor([90.0 / smoothed_unused]))
