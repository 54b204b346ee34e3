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
    "radius-clipped": ("radius", {"radius": "clipped", "scale": 1.0}),
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
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_ste_through_a_quantizer_is_z_plus_detached_gap():
    q = create_quantizer("vanilla", codebook_size=32, dim=4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    codes = q.decode_indices(out.indices)
    assert torch.equal(out.z_q, z + (codes - z).detach())
