"""`rotation` against vector-quantize-pytorch's rotation trick (`rotate_to`), called directly.

vector-quantize-pytorch implements the paper's Sec. 4.2 formula with the scale and rotation
detached (`vector_quantize_pytorch.rotate_to`), which is vqbench's default
(`normalize_in_graph: false`). The value must be the code and the gradient reaching `z` the
same, for generic pairs, nearly antipodal pairs and short vectors; then through a whole
quantizer (`VectorQuantize(rotation_trick=True)` against `vanilla` with `estimator: rotation`).
"""

from __future__ import annotations

import pytest
import torch
from vector_quantize_pytorch import VectorQuantize

try:
    from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to
except ImportError:  # older releases (tox -e min pins 1.20.0): the same function, arguments swapped
    from vector_quantize_pytorch.vector_quantize_pytorch import rotate_from_to

    def rotate_to(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return rotate_from_to(tgt, src)


from tests.reference.fixtures import assert_close, load_fixture
from vqbench.estimator import create_estimator
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}


def pairs(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(64, 8, generator=generator)
    q = torch.randn(64, 8, generator=generator)
    if case == "antipodal":
        q = -2 * z + 1e-2 * q
    elif case == "short":
        z = z * 1e-3
    return z, q


@pytest.mark.parametrize("case", ["generic", "antipodal", "short"])
def test_rotation_reproduces_rotate_to(case: str) -> None:
    z, q = pairs(case)
    upstream = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    z_ref, z_ours = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ref = rotate_to(z_ref, q)
    ours = create_estimator("rotation")(z_ours, q)
    (ref * upstream).sum().backward()
    (ours * upstream).sum().backward()
    assert torch.equal(ours, q), "the value is the code exactly"
    assert_close(z_ours.grad, z_ref.grad, "gradient w.r.t. z", rtol=1e-4, atol=1e-5)
    # The reference's value is `q` up to its rounding, which near antipodal pairs reaches 5e-4
    # in float32 (vqbench returns `q` exactly); in float64 it is `q` to 1e-12.
    value = rotate_to(z.double(), q.double())
    assert_close(value, q.double(), "the reference's value, float64", rtol=0.0, atol=1e-10)


def test_rotation_through_a_quantizer_equals_vector_quantize() -> None:
    dim, k = 4, 16
    torch.manual_seed(0)
    ref = VectorQuantize(dim=dim, codebook_size=k, rotation_trick=True, accept_image_fmap=True)
    ours = create_quantizer("vanilla", codebook_size=k, dim=dim, estimator="rotation")
    with torch.no_grad():
        ours.embedding.copy_(ref._codebook.embed[0])
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(2, dim, 4, 4, generator=generator)
    upstream = torch.randn(2, dim, 4, 4, generator=generator)
    z_ref, z_ours = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ref_z_q, ref_indices, _ = ref(z_ref, freeze_codebook=True)  # training mode: the trick is on
    out = ours(z_ours)
    (ref_z_q * upstream).sum().backward()
    (out.z_q * upstream).sum().backward()
    assert torch.equal(out.indices, ref_indices), "indices"
    assert_close(out.z_q, ref_z_q, "z_q", rtol=1e-4, atol=1e-5)
    assert_close(z_ours.grad, z_ref.grad, "gradient w.r.t. the input", rtol=1e-4, atol=1e-5)


def test_normalize_in_graph_reproduces_the_official_vqgan_code() -> None:
    """`normalize_in_graph: true` against cfifty/rotation_trick's VQGAN `encode`
    (`tools/reference_fixtures/rotation.py`; one pair nearly antipodal: the official code
    gives NaN at an exactly antipodal pair, vqbench a finite rotation)."""
    fixture = load_fixture("rotation_official_vqgan")

    def tokens(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])

    z = tokens(fixture["z"]).clone().requires_grad_(True)
    q = tokens(fixture["q"])
    value = create_estimator("rotation", normalize_in_graph=True)(z, q)
    (value * tokens(fixture["upstream"])).sum().backward()
    assert_close(value, tokens(fixture["value"]), "value", rtol=1e-5, atol=1e-5)
    assert_close(z.grad, tokens(fixture["grad_z"]), "gradient w.r.t. z", **TOL)
