"""`leech` against zhaoyue-zephyrus/bsq-vit's Λ24-SQ quantizer (fixtures written by
`tools/reference_fixtures/leech.py` from a checkout, with its commit)."""

import pytest
import torch
from vqbench_quantizers.leech import LEECH_DIM, LEECH_SHELL, LeechParams

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer

FIXTURE = load_fixture("leech")


def run(**params):
    """The reference's quantizer loss (weight 1) and output on the fixture's tokens."""
    settings = FIXTURE.settings
    q = create_quantizer("leech", dim=settings["embed_dim"], beta=settings["beta"], **params)
    h = FIXTURE["h"].reshape(-1, LEECH_DIM).clone().requires_grad_(True)
    return q, h, q.train().quantize_tokens(h)


def test_defaults_are_the_reference_config():
    settings, defaults = FIXTURE.settings, LeechParams()
    assert (LEECH_SHELL, LEECH_DIM) == (settings["n_embed"], settings["embed_dim"])
    assert settings["l2_norm"] and settings["freeze_codebook"]
    assert defaults.dim == settings["embed_dim"] and defaults.groups == 1
    assert defaults.beta == settings["beta"]
    assert defaults.loss_weight == settings["codebook_weight"]  # the trainer's weight of L_q


def test_indices_codes_and_loss_match():
    q, h, out = run(loss_weight=1.0)
    assert torch.equal(out.indices, FIXTURE["indices"].reshape(-1))
    assert_close(out.z_q, FIXTURE["z_q"].reshape(-1, LEECH_DIM), "z_q", rtol=0, atol=1e-6)
    assert_close(out.loss, FIXTURE["loss"], "loss", rtol=1e-5, atol=1e-7)
    assert not any(p.requires_grad for p in q.buffers())  # the codebook is frozen


@pytest.mark.parametrize("target", ["output", "loss"])
def test_gradients_match(target):
    _, h, out = run(loss_weight=1.0)
    upstream = FIXTURE["upstream"].reshape(-1, LEECH_DIM)
    objective = (out.z_q * upstream).sum() if target == "output" else out.loss
    objective.backward()
    assert_close(
        h.grad,
        FIXTURE[f"grad_{target}"].reshape(-1, LEECH_DIM),
        f"grad {target}",
        rtol=1e-4,
        atol=1e-6,
    )


def test_default_weight_drops_the_loss_as_the_config():
    _, h, out = run()
    assert out.loss.item() == 0.0
    assert out.stats["commitment"] > 0  # still logged
