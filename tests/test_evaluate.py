"""vqbench.evaluate: metrics over a split, codebook operations, what the figures need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine_helpers import small_config
from vqbench import VQBenchError
from vqbench.build import build_model
from vqbench.config import parse_run_config
from vqbench.distributed import World
from vqbench.evaluate import (
    SCATTER_CODES,
    apply_codebook_operation,
    evaluate_split,
    group_figure_data,
    reconstruction_strip,
)
from vqbench.quantizer import create_quantizer

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


def config_of(name: str):
    return parse_run_config(small_config(name), "test")


def test_group_figure_data_is_the_quantizers_own_statistics():
    q = create_quantizer("group_vq", codebook_size=64, dim=16, groups=4)
    data = group_figure_data(q)
    stats = q.group_statistics()
    assert data["groups"] == 4
    assert data["code_norm_mean"] == pytest.approx(stats["code_norm_mean"].tolist())
    norms = q.codebook().detach().norm(dim=1)
    group = q.code_groups()
    for j in range(4):
        assert data["code_norms"][j] == pytest.approx(norms[group == j].tolist(), rel=1e-6)
        assert len(data["pca_codes"][j]) == min(SCATTER_CODES, int((group == j).sum()))
    similarity = np.array(data["similarity"])
    assert similarity.shape == (64, 64) and np.allclose(np.diag(similarity), 1.0, atol=1e-5)
    state = torch.get_rng_state()
    group_figure_data(q)
    assert torch.equal(state, torch.get_rng_state())  # the PCA leaves the global RNG alone
    assert group_figure_data(create_quantizer("vanilla", codebook_size=8, dim=4)) is None


def test_the_reconstruction_strip_is_originals_over_reconstructions():
    config = config_of("vanilla")
    model = build_model(config)
    strip = reconstruction_strip(model, config, CPU.device)
    assert strip.dtype == np.uint8 and strip.shape == (2 * 32, 6 * 32, 3)
    from vqbench.data import build_split

    first = (build_split(config.data, train=False, seed=config.seed)[0] + 1) / 2
    expected = (first.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(strip[:32, :32], expected)
    assert model.training  # left in the mode it was in


def test_evaluate_split_counts_every_image_and_reports_usage():
    config = config_of("vanilla")
    results = evaluate_split(build_model(config), config, CPU)
    assert results["images"] == 8 and results["codebook_size"] == 64
    assert 0 < results["usage"] <= 1 and np.isfinite(results["psnr"])


def test_codebook_operations_apply_only_where_the_quantizer_can():
    model = build_model(config_of("vanilla"))
    assert apply_codebook_operation(model, None, None) is None
    with pytest.raises(VQBenchError, match="not both"):
        apply_codebook_operation(model, 8, 16)
    with pytest.raises(VQBenchError):
        apply_codebook_operation(model, 8, None)
    grouped = build_model(config_of("group_vq"))
    assert apply_codebook_operation(grouped, None, 128) == "extend-128"
    assert grouped.quantizer.codebook_size == 128
