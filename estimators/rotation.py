"""The rotation trick (Fifty et al. 2024, arXiv 2410.06424, Sec. 4 and Algorithm 1).

Forward: `q~ = sg(lambda R) e` with `lambda = ||q|| / ||e||` and `R` the rotation taking `e^` to
`q^`, so the value is `q`. Backward: `grad_e = lambda R^T grad_q~`: the gradient keeps its angle to
the code instead of its direction. `R` is applied in its Householder form (Sec. 4.2),

    R v = v - 2 (v.w) w + 2 (v.e^) q^,      w = (e^ + q^) / ||e^ + q^||,

O(d) per token with no `d x d` matrix. At antipodal `e^ = -q^`, `w = 0` and `R = I + 2 q^ e^T`
still maps `e^` to `q^`; norms are clamped at `eps` so that `e ~ 0` stays finite. The value
is then replaced by `q` itself (`vqbench.estimator.code_value`), removing the float rounding
of `lambda R e`, so the value is `q` exactly while the gradient is the paper's. The codebook
gets no gradient through `q~` (it learns through the quantizer's codebook loss or EMA).

Variants (`normalize_in_graph`): `false` (default) is the paper's formula (also the official
VQ-VAE code); `true` is the official VQGAN code, which keeps `e / ||e||` in the graph, so the
gradient is `(||q|| / ||e||) (I - e^ e^T) R^T g`: the paper's with its radial part removed.
"""

from __future__ import annotations

import pydantic
import torch
import torch.nn.functional as F

from vqbench.estimator import Estimator, EstimatorParams, code_value, register_estimator


class RotationParams(EstimatorParams):
    normalize_in_graph: bool = False
    eps: pydantic.PositiveFloat = 1e-6


def householder_rotate(v: torch.Tensor, e_hat: torch.Tensor, q_hat: torch.Tensor):
    """`R v` for the rotation `R` taking unit `e_hat` to unit `q_hat`, row by row, O(d)."""
    w = F.normalize(e_hat + q_hat, dim=-1)
    return v - 2 * (v * w).sum(-1, keepdim=True) * w + 2 * (v * e_hat).sum(-1, keepdim=True) * q_hat


@register_estimator("rotation")
class RotationTrick(Estimator):
    """Rotation trick: value q, gradient rotated from q to z and scaled by norm(q)/norm(z)."""

    Params = RotationParams

    def forward(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        eps = self.params.eps
        dtype = torch.promote_types(z.dtype, torch.float32)  # at least float32
        z, q = z.to(dtype), q.to(dtype)
        z_norm = z.norm(dim=-1, keepdim=True).clamp_min(eps)
        q_norm = q.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
        e_hat, q_hat = (z / z_norm).detach(), q.detach() / q_norm
        if self.params.normalize_in_graph:
            rotated = q_norm * householder_rotate(z / z_norm, e_hat, q_hat)
        else:
            rotated = (q_norm / z_norm.detach()) * householder_rotate(z, e_hat, q_hat)
        return code_value(q.to(dtype), rotated)
