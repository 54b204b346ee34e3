"""Every explicit-codebook quantizer trains with every built-in estimator."""

import pytest
import torch

from tests.helpers import SMALL_CONFIGS
from vqbench import create_quantizer, list_estimators

EXPLICIT = ["vanilla", "ema", "fc", "vqgan_lc", "simvq", "group_vq"]
ESTIMATORS = {
    "ste": ("ste", {}),
    "rotation": ("rotation", {}),
    "rotation-in-graph": ("rotation", {"normalize_in_graph": True}),
    "radius-identity-detached": ("radius", {}),
    "radius-clipped": ("radius", {"radius": "clipped", "scale": 1.0, "detach_radius": False}),
    "radius-constant": ("radius", {"radius": "constant", "scale": 0.5, "detach_radius": False}),
    "radius-power": ("radius", {"radius": "power", "power": 0.5, "detach_radius": False}),
    "radius-differentiable": ("radius", {"detach_radius": False}),
    "diveq": ("diveq", {}),
}


def test_the_matrix_covers_every_registered_estimator():
    assert {name for name, _ in ESTIMATORS.values()} == set(list_estimators())


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
@pytest.mark.parametrize("name", EXPLICIT)
def test_a_few_adam_steps_lower_the_loss(name, estimator):
    torch.manual_seed(0)
    kind, params = ESTIMATORS[estimator]
    q = create_quantizer(
        name, **SMALL_CONFIGS[name], estimator=kind, estimator_params=params
    ).train()
    # A stand-in encoder (a learned feature map) and decoder (a 1x1 conv) around the quantizer.
    target = torch.randn(4, 16, 4, 4)
    encoder = torch.nn.Parameter(torch.randn(4, 16, 4, 4))
    decoder = torch.nn.Conv2d(16, 16, 1)
    params = [encoder, *decoder.parameters(), *q.parameters()]
    optimizer = torch.optim.Adam([p for p in params if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(30):
        out = q(encoder)
        loss = (decoder(out.z_q) - target).square().mean() + out.loss
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(encoder.grad).all() and encoder.grad.abs().sum() > 0
        optimizer.step()
        q.after_optimizer_step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_ste_through_a_quantizer_gives_the_code_and_the_identity_gradient():
    q = create_quantizer("vanilla", codebook_size=32, dim=4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    assert torch.equal(out.z_q, q.decode_indices(out.indices))
    g = torch.randn_like(z)
    (out.z_q * g).sum().backward()
    assert torch.equal(z.grad, g)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
@pytest.mark.parametrize("name", EXPLICIT)
def test_the_forward_value_is_the_decoded_code(name, estimator, mode):
    """A tokenizer emits codes: whatever the estimator, z_q equals decoding its indices."""
    torch.manual_seed(1)
    kind, params = ESTIMATORS[estimator]
    q = create_quantizer(name, **SMALL_CONFIGS[name], estimator=kind, estimator_params=params)
    q.train(mode == "train")
    z = 3 * torch.randn(3, 16, 5, 5, requires_grad=True)  # far from the codes: large gaps
    out = q(z)
    assert torch.equal(out.z_q, q.decode_indices(out.indices)), (name, estimator, mode)
