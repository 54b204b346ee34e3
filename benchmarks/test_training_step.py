"""A full `vqgan` training step with and without the quantizer: the quantizer's share.

The engine's own step (`vqbench.train.Trainer.train_step`: generator and discriminator steps,
the model EMA, the learning-rate schedule) on the paper's setting: the `vqgan` preset at
128x128, a batch of 32, bf16 autocast, L1 + LPIPS + 0.1 GAN, 65,536 codes of dim 128.
LPIPS's VGG16 trunk has random weights (the trained ones cannot be downloaded on the GPU
machine; the cost is the same). "Without the quantizer" is an identity in its place
(`NoQuantizer`); vector-quantize-pytorch's modules sit in the same place through
`VQTorchQuantizer`. CUDA only: on CPU a step takes minutes.
"""

from __future__ import annotations

import pytest
import torch
from cases import _vqtorch_module
from test_quantizers import DEVICE, device_name, synchronised

from vqbench import distributed
from vqbench.checkpoint import seed_everything
from vqbench.config import RunConfig
from vqbench.models import build_autoencoder
from vqbench.quantizer import (
    ExplicitCodebookParams,
    Quantizer,
    QuantizerOutput,
    create_quantizer,
)
from vqbench.train import Parts, Trainer

BATCH, RESOLUTION, SIZE, DIM = 32, 128, 65536, 128
CONTEXT = "bf16"  # the reference step: bf16 autocast


class NoQuantizer(Quantizer):
    """The identity in the quantizer's place: the step without a quantizer."""

    Params = ExplicitCodebookParams

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        indices = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        return QuantizerOutput(z, indices, z.new_zeros(()))


class VQTorchQuantizer(Quantizer):
    """A vector-quantize-pytorch module (as in `cases.py`) in the quantizer's place."""

    Params = ExplicitCodebookParams

    def __init__(self, method: str) -> None:
        super().__init__(codebook_size=SIZE, dim=DIM)
        self.method = method
        self.module = _vqtorch_module(method, SIZE, DIM, {})

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        result = self.module(z)
        loss = result[2] if self.method == "simvq" else result[-1]
        return QuantizerOutput(result[0], result[1], loss.float().sum())


CASES = [("none", "none", {})]
CASES += [("vqbench", m, {}) for m in ("vanilla", "ema", "fc", "lfq", "vqgan_lc", "simvq")]
CASES += [("vqbench", "fsq", {"levels": [8, 8, 8, 5, 5, 5]})]
CASES += [("vqbench", "group_vq", {"groups": 64})]
CASES += [
    ("vqbench", method, {**extra, "search_precision": search})
    for method, extra in (("vanilla", {}), ("ema", {}), ("simvq", {}), ("group_vq", {"groups": 64}))
    for search in ("tf32", "bf16")
]
CASES += [("vqtorch", m, {}) for m in ("ema", "vanilla", "simvq", "lfq")]


def case_id(case) -> str:
    impl, method, params = case
    return "-".join([impl, method] + [f"{k}{v}" for k, v in params.items() if k != "levels"])


def quantizer_of(impl: str, method: str, params: dict) -> Quantizer:
    if impl == "none":
        return NoQuantizer(codebook_size=SIZE, dim=DIM)
    if impl == "vqtorch":
        return VQTorchQuantizer(method)
    if method == "fsq":
        return create_quantizer("fsq", dim=DIM, **params)
    return create_quantizer(method, codebook_size=SIZE, dim=DIM, **params)


def training_step(quantizer: Quantizer):
    """One generator + discriminator step and the model EMA, as `vqbench train` runs them."""
    import lpips

    config = RunConfig(
        data={"resolution": RESOLUTION},
        loss={"perceptual_weight": 1.0, "gan_weight": 0.1},
        train={"batch_size": BATCH, "precision": CONTEXT},
    )
    world = distributed.setup(str(DEVICE))
    seed_everything(0)
    perceptual = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).to(DEVICE).eval()
    model = build_autoencoder("vqgan", quantizer, RESOLUTION)
    trainer = Trainer.build(config, world, 1000, Parts(model=model, perceptual=perceptual))
    x = torch.rand(BATCH, 3, RESOLUTION, RESOLUTION, device=DEVICE) * 2 - 1

    def step():
        trainer.train_step([x])

    return step


@pytest.mark.skipif(DEVICE.type != "cuda", reason="a 128x128 vqgan step takes minutes on CPU")
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_vqgan_training_step(benchmark, case):
    impl, method, params = case
    step = training_step(quantizer_of(impl, method, params))
    benchmark.group = f"vqgan training step, batch {BATCH}, {RESOLUTION}x{RESOLUTION}, {CONTEXT}"
    benchmark.extra_info.update(
        {
            "impl": "training-step",
            "quantizer_impl": impl,
            "method": method,
            "codebook_size": SIZE,
            "params": params,
            "batch": BATCH,
            "resolution": RESOLUTION,
            "precision": CONTEXT,
            "device": DEVICE.type,
            "device_name": device_name(),
        }
    )
    benchmark.pedantic(synchronised(step), rounds=5, warmup_rounds=2, iterations=2)
