"""`simvq` against the official SimVQ (`youngsheen/SimVQ`, `taming/modules/vqvae/quantize.py`).

Fixture: `tools/reference_fixtures/simvq.py`. The frozen basis and the linear map are copied;
indices, `z_q`, the loss (with the ImageNet config's `beta`, `legacy: false` and
`commit_weight`) and the gradients with respect to the input and the map's weight and bias
must match. The initial codebook `C = W C^ + b` is compared by its statistics over seeds (no
weight copied): this is what sees a bias that starts at zero instead of `nn.Linear`'s
U(-1/sqrt(d), 1/sqrt(d)).
"""

from __future__ import annotations

import torch

from tests.reference.fixtures import assert_close, init_statistics, load_fixture, surrogate_backward
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}


def test_simvq_reproduces_official_simvq() -> None:
    fixture = load_fixture("simvq")
    s = fixture.settings
    assert s["legacy"] is False and s["commit_weight"] == 1.0, "the recipe the config reads"
    k, d = fixture["core"].shape
    quantizer = create_quantizer("simvq", codebook_size=k, dim=d, beta=s["beta"]).train()
    with torch.no_grad():
        quantizer.core.copy_(fixture["core"])
        quantizer.projection.weight.copy_(fixture["proj_weight"])
        quantizer.projection.bias.copy_(fixture["proj_bias"])
    z = fixture["z"].clone().requires_grad_(True)
    out = quantizer(z)
    surrogate_backward(out.z_q, out.loss, fixture["upstream"])
    assert torch.equal(out.indices.flatten(), fixture["indices"]), "indices"
    assert_close(out.z_q, fixture["z_q"], "z_q", **TOL)
    assert_close(out.loss, fixture["loss"], "loss", **TOL)
    assert_close(z.grad, fixture["grad_z"], "gradient w.r.t. the input", **TOL)
    weight, bias = quantizer.projection.weight, quantizer.projection.bias
    assert_close(weight.grad, fixture["grad_proj_weight"], "gradient w.r.t. W", **TOL)
    assert_close(bias.grad, fixture["grad_proj_bias"], "gradient w.r.t. b", **TOL)


def test_simvq_initial_codebook_statistics() -> None:
    """Mean offset, spread and norms of `W C^ + b` at init, seed by seed, within sampling
    error (512 codes of dimension 8; the offset is the bias, one draw per seed)."""
    fixture = load_fixture("simvq")
    s = fixture.settings
    ours = []
    for seed in s["init_seeds"]:
        torch.manual_seed(seed)
        quantizer = create_quantizer(
            "simvq", codebook_size=s["init_codebook_size"], dim=s["init_dim"], core_seed=seed
        )
        with torch.no_grad():
            ours.append(init_statistics(quantizer.codebook()))
    ours, ref = torch.stack(ours), fixture["init"]
    # Averaged over the seeds: one seed's offset is one draw of the bias.
    assert_close(ours.mean(0)[:3], ref.mean(0)[:3], "mean offset, spread, norm", rtol=0.25, atol=0)


def test_simvq_defaults_are_the_official_recipe() -> None:
    s = load_fixture("simvq").settings  # legacy false: codebook 1, commitment beta
    p = create_quantizer("simvq", codebook_size=16, dim=4).params
    assert (p.codebook_weight, p.beta, p.bias) == (s["commit_weight"], s["beta"], True)
