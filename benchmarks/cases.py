"""One forward+backward step of a quantizer, for vqbench and for vector-quantize-pytorch.

`build_step` returns a closure that runs one step on fixed random data: forward, a loss made of
the quantizer's own loss plus a fixed projection of its output (standing in for the decoder),
backward. `impl="floor"` is the one distance matmul `tokens x dim x codebook_size` alone.
"""

from __future__ import annotations

import contextlib
import math

import torch

FSQ_LEVELS = {
    1024: [8, 5, 5, 5],
    8192: [8, 8, 8, 4, 4],
    65536: [8, 8, 8, 5, 5, 5],
    262144: [8, 8, 8, 8, 8, 8],
}


def _precision_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _set_tf32(precision: str) -> None:
    enabled = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


#: Composites: the case's codebook size is the product of their stages' or parts' sizes.
COMPOSITES = ("residual", "product")
#: Quantizers with a codebook of their own fixed size (spherical Leech: 196,560 per group).
FIXED_SIZE = ("leech",)


def _vqbench_module(method: str, codebook_size: int, dim: int, params: dict):
    from vqbench import create_quantizer

    if method in COMPOSITES:
        return create_quantizer(method, dim=dim, **params)
    if method in ("fsq", "fsp"):
        return create_quantizer(method, levels=FSQ_LEVELS[codebook_size], dim=dim, **params)
    if method in FIXED_SIZE:  # one codebook size of their own (the case's size is ignored)
        return create_quantizer(method, dim=dim, **params)
    return create_quantizer(method, codebook_size=codebook_size, dim=dim, **params)


def _vqtorch_module(method: str, codebook_size: int, dim: int, params: dict):
    """vector-quantize-pytorch's closest module, with the rotation trick off (plain STE)."""
    import vector_quantize_pytorch as vq

    if params or method == "bsq":  # the families' cases (they carry their parameters)
        return _vqtorch_family(vq, method, codebook_size, dim, params)
    if method == "ema":
        return vq.VectorQuantize(
            dim=dim,
            codebook_size=codebook_size,
            decay=0.99,
            commitment_weight=0.25,
            rotation_trick=False,
            accept_image_fmap=True,
        )
    if method == "vanilla":
        return vq.VectorQuantize(
            dim=dim,
            codebook_size=codebook_size,
            ema_update=False,
            learnable_codebook=True,
            rotation_trick=False,
            accept_image_fmap=True,
        )
    if method == "simvq":
        return vq.SimVQ(
            dim=dim, codebook_size=codebook_size, rotation_trick=False, channel_first=True
        )
    if method == "lfq":
        return vq.LFQ(
            dim=dim,
            codebook_size=codebook_size,
            entropy_loss_weight=0.1,
            commitment_loss_weight=0.25,
        )
    if method == "fsq":
        return vq.FSQ(levels=FSQ_LEVELS[codebook_size], dim=dim)
    if method == "vqbridge":
        return _vqtorch_vqbridge(vq, codebook_size, dim)
    raise ValueError(f"vector-quantize-pytorch has no '{method}' case here")


class _LibraryBridge(torch.nn.Module):
    """vqbench's VQBridge projector (the same module, widths and init as `vqbridge`) as the
    library's `vq_bridge` hook, which maps its `(1, K, dim)` codes to the lookup codes."""

    def __init__(self, codebook_size: int, dim: int) -> None:
        super().__init__()
        from vqbench import create_quantizer

        self.side = math.isqrt(codebook_size)
        self.bridge = create_quantizer("vqbridge", codebook_size=codebook_size, dim=dim).qbridge

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        h, k, d = embed.shape
        image = embed.transpose(1, 2).reshape(h, d, self.side, self.side)
        return self.bridge(image).reshape(h, d, k).transpose(1, 2)


def _vqtorch_vqbridge(vq, codebook_size: int, dim: int):
    """`VectorQuantize(vq_bridge=...)`: the library has the hook, not a projector of its own.
    Plain STE and the VQ-VAE loss (codebook 1, commitment 0.25), as FVQ."""
    return vq.VectorQuantize(
        dim=dim, codebook_size=codebook_size, vq_bridge=_LibraryBridge(codebook_size, dim),
        commitment_weight=0.25, rotation_trick=False, accept_image_fmap=True,
    )  # fmt: skip


class _TokensLast(torch.nn.Module):
    """Feeds a `(B, dim, H, W)` map to a library module that takes `(B, N, dim)` tokens (its
    ResidualVQ fails on image maps in v1.32), and returns the output as a map."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor):
        b, d, h, w = z.shape
        out = self.inner(z.permute(0, 2, 3, 1).reshape(b, h * w, d))
        return (out[0].reshape(b, h, w, d).permute(0, 3, 1, 2), *out[1:])


def _vqtorch_family(vq, method: str, codebook_size: int, dim: int, params: dict):
    """The library's residual, grouped, spherical-LFQ and directional-reparam modules."""
    plain = dict(ema_update=False, learnable_codebook=True, rotation_trick=False)
    inner = params.get("quantizer_params", {}).get("codebook_size")
    if method == "residual":
        implicit = params.get("implicit_codebook") == "mlp"  # QINCo-style (issue 24)
        return _TokensLast(
            vq.ResidualVQ(
                dim=dim, num_quantizers=params["stages"], codebook_size=inner,
                implicit_neural_codebook=implicit, **plain,
            )
        )  # fmt: skip
    if method == "product":
        return _TokensLast(
            vq.GroupedResidualVQ(
                dim=dim, groups=params["parts"], num_quantizers=1, codebook_size=inner, **plain
            )
        )
    if method == "bsq":  # both entropies over all codes, as ours
        return vq.LFQ(
            dim=dim, codebook_size=codebook_size, spherical=True, entropy_loss_weight=0.1,
            commitment_loss_weight=0.25,
        )  # fmt: skip
    if method == "vanilla" and params.get("estimator") == "diveq":
        # The library requires dead-code replacement with directional reparameterisation.
        return vq.VectorQuantize(
            dim=dim, codebook_size=codebook_size, directional_reparam=True,
            threshold_ema_dead_code=2, accept_image_fmap=True,
        )  # fmt: skip
    raise ValueError(f"vector-quantize-pytorch has no '{method}' case here")


def build_step(
    impl: str,
    method: str,
    codebook_size: int,
    tokens: int,
    dim: int,
    params: dict,
    device: torch.device,
    precision: str = "fp32",
):
    _set_tf32(precision)
    generator = torch.Generator().manual_seed(0)
    # The paper's latents are 16 x 16; a batch of them gives the token count (32 -> 8,192).
    side = 16 if tokens % 256 == 0 else int(tokens**0.5)
    if impl == "floor":
        z = torch.randn(tokens, dim, generator=generator).to(device)
        codes = torch.randn(codebook_size, dim, generator=generator).to(device)

        def floor_step():
            with torch.no_grad(), _precision_context(device, precision):
                return z @ codes.t()

        return floor_step

    module = (
        (_vqbench_module if impl == "vqbench" else _vqtorch_module)(
            method, codebook_size, dim, params
        )
        .to(device)
        .train()
    )
    # (B, dim, H, W) feature maps with B * H * W = tokens, as an encoder would give.
    batch = tokens // (side * side)
    z = torch.randn(batch, dim, side, side, generator=generator).to(device).requires_grad_()
    upstream = torch.randn(batch, dim, side, side, generator=generator).to(device)

    def step():
        z.grad = None
        module.zero_grad(set_to_none=True)
        with _precision_context(device, precision):
            if impl == "vqbench":
                out = module(z)
                z_q, loss = out.z_q, out.loss
            else:
                result = module(z)
                z_q = result[0]
                loss = result[-1] if method not in ("fsq",) else z_q.new_zeros(())
                if method == "simvq":
                    loss = result[2]
        total = (z_q.float() * upstream).mean() + loss.float().sum()
        total.backward()
        if impl == "vqbench":
            module.after_optimizer_step()  # EMA statistics, as the trainer applies them

    return step
