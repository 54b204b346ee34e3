"""`fsp` against zhai-lw/vp-vae's `FSP` (fixtures written by `tools/reference_fixtures/fsp.py`
from a checkout, with its commit): training perturbation, inference bins, loss and gradient."""

import pytest
import torch
from vqbench_quantizers.fsp import FSPParams

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer

CASES = [
    "default_train",
    "default_eval",
    "laplace_kurt_rate_train",
    "normal_inverse_train",
    "sigmoid_inverse_eval",
]
#: The reference's keyword arguments under vqbench's names.
NAMES = {
    "act_name": "activation",
    "need_inv_act": "inverse_activation",
    "vector_norm": "vector_norm",
    "quantize_rate": "quantize_rate",
    "levels": "levels",
}


def test_defaults_are_the_reference_defaults():
    defaults = load_fixture("fsp_default_train").settings["defaults"]
    ours = FSPParams()
    for name, value in defaults.items():
        assert getattr(ours, NAMES[name]) == value, name


@pytest.mark.parametrize("case", CASES)
def test_output_indices_loss_and_gradient_match(case):
    fixture = load_fixture(f"fsp_{case}")
    settings = fixture.settings
    params = {NAMES[k]: v for k, v in settings["kwargs"].items()}
    q = create_quantizer("fsp", dim=len(params["levels"]), **params).train(settings["training"])
    x = fixture["features"].clone().requires_grad_(True)
    torch.manual_seed(settings["seed"])  # the perturbation's draws, in the reference's order
    out = q.quantize_tokens(x)
    ((out.z_q * fixture["upstream"]).sum() + out.loss).backward()
    assert torch.equal(out.indices, fixture["indices"])
    assert_close(out.z_q, fixture["q_z"], "output", rtol=1e-5, atol=1e-6)
    assert_close(out.loss, fixture["norm_loss"], "loss", rtol=1e-5, atol=1e-7)
    assert_close(x.grad, fixture["grad"], "gradient", rtol=1e-5, atol=1e-6)
    if "p_accept_prob" in fixture.tensors:
        assert_close(out.stats["p_accept_prob"], fixture["p_accept_prob"], "acceptance")
