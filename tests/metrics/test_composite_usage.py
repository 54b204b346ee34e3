"""Usage of composite indices `(..., D)`: per index and as the product, against Python sets
and counters, on one process and reduced across two gloo processes."""

import math
import os
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.metrics.test_distributed import free_port
from vqbench.metrics import CodebookUsage
from vqbench.metrics import usage as usage_module


def reference(rows: list[tuple[int, ...]], sizes: list[int]) -> dict:
    """Per-index and product usage and perplexity, counted by hand."""

    def perplexity(counter):
        total = sum(counter.values())
        return math.exp(-sum(c / total * math.log(c / total) for c in counter.values()))

    columns = [Counter(row[i] for row in rows) for i in range(len(sizes))]
    combos = Counter(rows)
    return {
        "usage_per_index": [len(c) / s for c, s in zip(columns, sizes)],
        "perplexity_per_index": [perplexity(c) for c in columns],
        "product_usage": len(combos) / math.prod(sizes),
        "product_used_codes": len(combos),
        "product_perplexity": perplexity(combos),
    }


def batches(sizes, count=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # Skewed draws so that combinations repeat and some codes stay unused.
    return [
        torch.stack(
            [torch.randint(0, max(1, s // 2), (2, 3, 4), generator=generator) for s in sizes], -1
        )
        for _ in range(count)
    ]


def check(result, rows, sizes):
    want = reference(rows, sizes)
    for key, value in want.items():
        assert result[key] == pytest.approx(value), key
    assert result["usage"] == pytest.approx(sum(want["usage_per_index"]) / len(sizes))
    assert result["index_sizes"] == sizes


@pytest.mark.parametrize("dense", [True, False])
def test_per_index_and_product_usage_equal_counting_by_hand(monkeypatch, dense):
    if not dense:  # the distinct-rows path, compacted every few batches
        monkeypatch.setattr(usage_module, "DENSE_PRODUCT_LIMIT", 0)
        monkeypatch.setattr(usage_module, "_COMPACT_ROWS", 30)
    sizes = [8, 6, 4]
    metric = CodebookUsage(math.prod(sizes), index_sizes=sizes)
    assert metric.dense_product == dense
    data = batches(sizes)
    for indices in data:
        metric.update(None, None, indices)
    rows = [tuple(r) for b in data for r in b.reshape(-1, 3).tolist()]
    check(metric.compute(), rows, sizes)
    metric.reset()
    metric.update(None, None, data[0])
    check(metric.compute(), [tuple(r) for r in data[0].reshape(-1, 3).tolist()], sizes)


def test_products_beyond_int64_are_counted_by_distinct_rows():
    sizes = [65536] * 4 + [4]  # 2^66 combinations
    metric = CodebookUsage(math.prod(sizes), index_sizes=sizes)
    rows = torch.tensor([[5, 65535, 7, 9, 1], [5, 65535, 7, 9, 1], [0, 0, 0, 0, 3]])
    metric.update(None, None, rows.reshape(1, 1, 3, 5))
    result = metric.compute()
    assert result["product_used_codes"] == 2
    assert result["product_usage"] == pytest.approx(2 / 2**66)
    assert result["usage_per_index"][0] == pytest.approx(2 / 65536)


def test_without_product_only_per_index_usage_is_kept():
    metric = CodebookUsage(64, index_sizes=[8, 8], product=False)
    metric.update(None, None, torch.tensor([[[[1, 2], [3, 4]]]]))
    result = metric.compute()
    assert result["usage_per_index"] == [2 / 8, 2 / 8] and "product_usage" not in result


def worker(rank: int, port: int, sparse: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if sparse:
        usage_module.DENSE_PRODUCT_LIMIT = 0
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        metric = CodebookUsage(8 * 6, index_sizes=[8, 6])
        for indices in batches([8, 6], count=6)[rank::2]:
            metric.update(None, None, indices)
        torch.save(metric.compute(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sparse", [False, True])
def test_two_gloo_processes_reduce_to_the_one_process_result(tmp_path, sparse):
    out = str(tmp_path / "usage")
    mp.spawn(worker, args=(free_port(), sparse, out), nprocs=2, join=True)
    data = batches([8, 6], count=6)
    rows = [tuple(r) for b in data for r in b.reshape(-1, 2).tolist()]
    for rank in (0, 1):
        check(torch.load(f"{out}.{rank}", weights_only=False), rows, [8, 6])
