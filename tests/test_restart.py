"""Dead-code restart (`vqbench.restart`), hand-worked on vanilla, fc and EMA, and in two gloo
processes (the replicas stay identical)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tests.metrics.test_distributed import free_port
from vqbench import VQBenchError, create_quantizer


def feature_map(tokens: torch.Tensor) -> torch.Tensor:
    """`(N, d)` tokens as a `(1, d, 1, N)` feature map."""
    return tokens.t().reshape(1, tokens.shape[1], 1, -1)


CODES = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]])
TOKENS = torch.tensor([[0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [9.5, 0.5], [10.5, 0.0]])


def test_codes_unused_for_the_window_take_distinct_batch_tokens():
    q = create_quantizer("vanilla", codebook_size=4, dim=2, restart_after=2).train()
    with torch.no_grad():
        q.embedding.copy_(CODES)
    q(feature_map(TOKENS))
    q.after_optimizer_step()  # codes 2 and 3 idle for one step: kept
    assert torch.equal(q.embedding, CODES)
    assert q.restart.idle_steps.tolist() == [0, 0, 1, 1]
    q(feature_map(TOKENS))
    q.after_optimizer_step()  # idle for two steps: restarted
    assert torch.equal(q.embedding[:2], CODES[:2])
    new = q.embedding[2:]
    matches = [(TOKENS == code).all(1).nonzero().flatten().tolist() for code in new]
    assert all(len(m) == 1 for m in matches) and matches[0] != matches[1]  # without replacement
    assert q.restart.idle_steps.tolist() == [0, 0, 0, 0] and int(q.restart.restarted) == 2


def test_usage_counts_over_every_micro_batch_of_a_step():
    q = create_quantizer("vanilla", codebook_size=4, dim=2, restart_after=1).train()
    with torch.no_grad():
        q.embedding.copy_(CODES)
    q(feature_map(TOKENS[:3]))  # code 0
    q(feature_map(TOKENS[3:]))  # code 1, the step's last micro-batch
    q.after_optimizer_step()
    assert torch.equal(q.embedding[:2], CODES[:2])  # both used within the step
    for code in q.embedding[2:]:  # restarted from the last micro-batch's tokens
        assert (TOKENS[3:] == code).all(1).any()


def test_eval_forwards_and_restart_off_change_nothing():
    q = create_quantizer("vanilla", codebook_size=4, dim=2, restart_after=1)
    off = create_quantizer("vanilla", codebook_size=4, dim=2).train()
    assert off.restart is None
    with torch.no_grad():
        q.embedding.copy_(CODES)
        off.embedding.copy_(CODES)
    q.eval()(feature_map(TOKENS))
    q.after_optimizer_step()
    off(feature_map(TOKENS))
    off.after_optimizer_step()
    assert torch.equal(q.embedding, CODES) and torch.equal(off.embedding, CODES)


def test_same_seed_same_draws_and_resumable_state():
    def two_steps(seed):
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        q = create_quantizer("vanilla", codebook_size=8, dim=2, restart_after=1, restart_seed=3)
        q.train()
        with torch.no_grad():
            q.embedding.copy_(torch.arange(16.0).reshape(8, 2) * 10)
        z = feature_map(torch.randn(40, 2, generator=torch.Generator().manual_seed(0)))
        for _ in range(2):
            q(z)
            q.after_optimizer_step()
        return q

    a, b = two_steps(0), two_steps(1)
    assert int(a.restart.restarted) > 0
    assert torch.equal(a.embedding, b.embedding)
    assert set(a.state_dict()) >= {"restart.idle_steps", "restart.steps", "restart.restarted"}


def test_fc_restarts_with_unit_lookup_tokens():
    q = create_quantizer("fc", codebook_size=16, dim=4, lookup_dim=3, restart_after=1).train()
    z = torch.randn(1, 4, 2, 2)  # 4 tokens: at least 12 codes unused
    q(z)
    q.after_optimizer_step()
    u = F.normalize(q.project_in(z.permute(0, 2, 3, 1).reshape(-1, 4)), dim=1).detach()
    restarted = int(q.restart.restarted)
    assert restarted >= 12
    matched = [(u - code).abs().sum(1).min() < 1e-6 for code in q.embedding.detach()]
    assert sum(matched) >= restarted


def test_ema_restarts_idle_codes_with_a_count_of_one():
    q = create_quantizer("ema", codebook_size=4, dim=2, decay=0.9, restart_after=1).train()
    q.embedding.copy_(CODES)
    q.embed_sum.copy_(CODES)
    q(feature_map(TOKENS))
    q.after_optimizer_step()
    restarted = q.cluster_size == 1.0  # initial 1 -> 0.9 * 1 + 0.1 * n for the used codes
    assert restarted.tolist() == [False, False, True, True]
    torch.testing.assert_close(q.embed_sum[restarted], q.embedding[restarted])
    for code in q.embedding[restarted]:
        assert (TOKENS == code).all(1).any()


def test_restart_option_is_validated():
    with pytest.raises(VQBenchError, match="vanilla.restart_after=-1 is invalid"):
        create_quantizer("vanilla", codebook_size=4, dim=2, restart_after=-1)


# ---- two gloo processes ---------------------------------------------------------------------
def replica_worker(rank: int, port: int, name: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same initial codebook on both ranks
        q = create_quantizer(name, codebook_size=32, dim=3, restart_after=2).train()
        trained = torch.nn.parallel.DistributedDataParallel(q) if name == "vanilla" else q
        optimizer = torch.optim.Adam(q.parameters(), lr=0.05) if name == "vanilla" else None
        data = torch.Generator().manual_seed(10 + rank)  # each rank its own tokens
        for _ in range(6):
            z = torch.randn(2, 3, 3, 3, generator=data) * 2 + rank
            result = trained(z)
            if optimizer is not None:
                (result.loss + result.z_q.square().mean()).backward()
                optimizer.step()
                optimizer.zero_grad()
            q.after_optimizer_step()
        torch.save({k: v.clone() for k, v in q.state_dict().items()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["vanilla", "ema"])
def test_two_gloo_processes_keep_identical_replicas_after_restarts(tmp_path, name):
    out = str(tmp_path / "state")
    mp.spawn(replica_worker, args=(free_port(), name, out), nprocs=2, join=True)
    first, second = (torch.load(f"{out}.{r}") for r in (0, 1))
    assert int(first["restart.restarted"]) > 0
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
