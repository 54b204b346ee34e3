"""`vqbridge` against the official FVQ (`yfChang-cv/FVQ`, `tokenizer/tokenizer_image/`
`vq_model_qbridge_release.py` `VectorQuantizer` with the ViT bridge of `qbridge_ViT.py`).

Fixture: `tools/reference_fixtures/vqbridge.py`. Every weight (base codebook and bridge) is
copied by name; indices, `z_q`, the codebook and commitment terms, the loss and the gradients
w.r.t. the input and every parameter must match, with the bridge fully redrawn (`xs`) and in
the reference's init with 4 x 4 patches (`p4`). Built under the same seed, vqbench's module has
the reference's initial weights (fingerprints of QBridge-L/4's). The learning-rate annealing
(`optim.schedule.kind: hold_linear`) equals the release training script's `combined_lr_lambda`
step by step.
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture, surrogate_backward
from vqbench.build import schedule_factor
from vqbench.config import ScheduleConfig
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}
#: The reference's QB_type names as vqbench parameters (depth 2, 4 heads, mlp ratio 2).
BRIDGES = {"QBridge-XS/2": {"patch_size": 2, "head_dim": 8}}


def build(fixture, case: str):
    s = fixture.settings["cases"][case]
    bridge = BRIDGES[s["QB_type"]]
    if case == "p4":
        p4 = fixture.settings["p4_bridge"]
        bridge = {"patch_size": p4["patch_size"], "head_dim": p4["head_hidden_size"]}
    return create_quantizer("vqbridge", codebook_size=s["n_e"], dim=s["e_dim"], **bridge)


@pytest.mark.parametrize("case", ["xs", "p4"])
def test_vqbridge_reproduces_official_fvq(case: str) -> None:
    fixture = load_fixture("vqbridge")
    t = {k.split(".", 1)[1]: v for k, v in fixture.tensors.items() if k.startswith(f"{case}.")}
    quantizer = build(fixture, case).train()
    weights = {k.removeprefix("w."): v for k, v in t.items() if k.startswith("w.")}
    assert set(weights) == {n for n, _ in quantizer.named_parameters()}, "parameter names"
    quantizer.load_state_dict(weights, strict=True)
    z = t["z"].clone().requires_grad_(True)
    out = quantizer(z)
    surrogate_backward(out.z_q, out.loss, t["upstream"])
    assert torch.equal(out.indices.flatten(), t["indices"]), "indices"
    assert_close(out.z_q, t["z_q"], "z_q", **TOL)
    assert_close(out.stats["codebook"], t["codebook"], "codebook term", **TOL)
    assert_close(out.stats["commitment"], t["commitment"], "commitment term", **TOL)
    assert t["entropy"] == 0, "the release trains with entropy_loss_ratio 0"
    assert_close(out.loss, t["loss"], "loss", **TOL)
    assert_close(z.grad, t["grad_z"], "gradient w.r.t. the input", **TOL)
    for name, param in quantizer.named_parameters():
        assert_close(param.grad, t[f"g.{name}"], f"gradient w.r.t. {name}", **TOL)


def test_vqbridge_initial_weights_are_the_reference_init() -> None:
    """Same seed, same construction order: every initial weight of QBridge-L/4 over 256 codes
    of 16 channels has the reference's sum, sum of squares and first entries (E ~ U(-1/K,
    1/K), Xavier-uniform maps, zero biases, zero recover layer)."""
    fixture = load_fixture("vqbridge")
    s = fixture.settings["init"]
    assert s["QB_type"] == "QBridge-L/4"
    for seed in s["seeds"]:
        torch.manual_seed(seed)
        quantizer = create_quantizer(
            "vqbridge", codebook_size=s["n_e"], dim=s["e_dim"], patch_size=4
        )
        state = quantizer.state_dict()
        expected = {k.split(".", 1)[1] for k in fixture.tensors if k.startswith(f"init{seed}.")}
        assert set(state) == expected, "state names"
        for name, value in state.items():
            flat = value.double().flatten()
            ours = torch.cat([flat.sum()[None], flat.pow(2).sum()[None], flat[:16]])
            assert_close(ours, fixture[f"init{seed}.{name}"], f"seed {seed} {name}", **TOL)
    with torch.no_grad():
        assert quantizer.codebook().abs().max() == 0, "the projected codebook starts at zero"


def test_vqbridge_defaults_are_the_release_recipe() -> None:
    s = load_fixture("vqbridge").settings
    p = create_quantizer("vqbridge", codebook_size=64, dim=8, patch_size=2, head_dim=8).params
    assert (p.beta, p.codebook_weight) == (s["beta"], s["codebook_weight"])
    default = create_quantizer("vqbridge", dim=8).params  # QBridge-L/4 at 16,384 codes
    assert (default.codebook_size, default.patch, default.depth) == (16_384, 4, 2)
    assert (default.heads, default.head_dim, default.mlp_ratio) == (4, 64, 2.0)
    assert default.train_base_codebook


def test_hold_linear_schedule_is_the_release_annealing() -> None:
    """`combined_lr_lambda` (`--sche_type lin`, 4 warmup epochs of 40, `--lrT 0.3`) at every
    step of a 1,000-step run, against `schedule_factor`."""
    fixture = load_fixture("vqbridge")
    s = fixture.settings["schedule"]
    total = s["epochs"] * s["steps_per_epoch"]
    schedule = ScheduleConfig(
        kind="hold_linear",
        warmup_steps=s["warmup_ep"] * s["steps_per_epoch"],
        min_lr_ratio=0.01,
    )
    factor = schedule_factor(schedule, total)
    ours = torch.tensor([factor(step) for step in range(total)], dtype=torch.float64)
    assert_close(ours, fixture["schedule"].double(), "learning-rate factor", rtol=1e-12, atol=0)


def test_library_vq_bridge_hook_with_the_same_bridge_looks_up_the_same_codes() -> None:
    """vector-quantize-pytorch's `VectorQuantize(vq_bridge=...)` is a hook with no projector
    of its own: given vqbench's bridge and base codes it picks the same indices and `z_q`.
    Its loss is `commitment_weight * ||q - z||^2` with gradients to both sides (the codebook
    term weighted 0.25, FVQ's 1.0), so only the commitment term is compared."""
    import vector_quantize_pytorch as vq

    quantizer = create_quantizer("vqbridge", codebook_size=64, dim=8, patch_size=4).train()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in quantizer.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)

    def hook(embed: torch.Tensor) -> torch.Tensor:  # (1, K, d) codes, as the library holds
        return quantizer.qbridge(embed.transpose(1, 2).reshape(1, 8, 8, 8)).reshape(1, 8, 64).mT

    library = vq.VectorQuantize(
        dim=8, codebook_size=64, vq_bridge=hook, commitment_weight=0.25, rotation_trick=False,
        accept_image_fmap=True,
    ).train()  # fmt: skip
    with torch.no_grad():
        library._codebook.embed.copy_(quantizer.embedding.weight[None])
    z = torch.randn(2, 8, 4, 4, generator=generator)
    z_q, indices, loss = library(z)
    out = quantizer(z)
    assert torch.equal(indices, out.indices), "indices"
    assert_close(z_q, out.z_q, "z_q", **TOL)
    assert_close(loss, 0.25 * out.stats["commitment"], "the library's loss", **TOL)
