"""What every fixture script shares: the checkout's commit, loading one of its files, writing."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import torch
from safetensors.torch import save_file

from tests.reference.fixtures import init_statistics, surrogate_backward  # noqa: F401 (shared)

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "reference" / "fixtures"


def codebooks_over_seeds(build, seeds=range(6)) -> dict[str, torch.Tensor]:
    """`{"codebooks": (S, K, d)}`: the initial codebook `build()` returns under each seed."""
    codebooks = []
    for seed in seeds:
        torch.manual_seed(seed)
        codebooks.append(build().detach().clone())
    return {"codebooks": torch.stack(codebooks)}


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr saying what is wrong and how to mend it, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def require(checkout: Path, *relative: str) -> None:
    """Each of `relative` exists in the checkout, else one line (the wrong repository)."""
    for name in relative:
        if not (checkout / name).exists():
            fail(f"{name} is not in {checkout}; give a checkout of the reference repository")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see --help")


def parse_args(description: str, repository: str, *, commit: bool = False) -> argparse.Namespace:
    """``--checkout PATH`` (a clone of ``repository``) and ``--out DIR`` (the test tree).

    With ``commit=True`` also ``--commit SHA``: the commit a copy of the needed files (not a
    git checkout, for repositories too large to clone) was taken from. The checkout (and its
    commit) is checked before anything runs, so bad input writes nothing.
    """
    parser = _Parser(description=f"{description} Reference: {repository}.")
    parser.add_argument("--checkout", type=Path, required=True, help=f"a clone of {repository}")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="fixture folder")
    if commit:
        parser.add_argument(
            "--commit", help="the commit of the copied files when --checkout is not a git clone"
        )
    args = parser.parse_args()
    if not args.checkout.is_dir():
        fail(f"--checkout {args.checkout} is not a folder; clone {repository} there")
    given = getattr(args, "commit", None)
    if given is not None and not re.fullmatch(r"[0-9a-f]{40}", given):
        fail(f"--commit {given!r} is not a 40-digit commit; give the full SHA of the copied files")
    if given is None:
        checkout_commit(args.checkout)
    return args


def checkout_commit(checkout: Path) -> str:
    """The commit of ``checkout``: ``git rev-parse HEAD``, or a bare mirror's ``HEAD``."""
    result = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if result.returncode != 0:
        fail(f"{checkout} is not a git checkout; clone the repository there (or give --commit)")
    return result.stdout.strip()


def load_module(checkout: Path, relative: str, name: str | None = None) -> ModuleType:
    """Import one file of the checkout by path, without running its package's ``__init__``."""
    path = checkout / relative
    if not path.is_file():
        fail(f"{relative} is not in {checkout}; give a checkout of the reference repository")
    name = name or f"reference_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_fixture(
    name: str,
    tensors: dict[str, torch.Tensor],
    *,
    repository: str,
    checkout: Path,
    files: list[str],
    settings: dict,
    out: Path = FIXTURES,
    commit: str | None = None,
) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` (repository, commit, files, settings)."""
    commit = commit or checkout_commit(checkout)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    contiguous = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    save_file(contiguous, out / f"{name}.safetensors")
    meta = {
        "name": name,
        "repository": repository,
        "commit": commit,
        "files": files,
        "script": f"tools/reference_fixtures/{Path(sys.argv[0]).name}",
        "torch": torch.__version__,
        "settings": settings,
        "tensors": sorted(contiguous),
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out / name}.{{safetensors,json}} from {repository}@{meta['commit'][:12]}")
    return out / f"{name}.json"


# ---- published tokenizers -------------------------------------------------------------------
def uniform_images(shape: tuple[int, ...], seed: int = 2) -> torch.Tensor:
    """Images uniform in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) * 2 - 1


def smooth_images(batch: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: noise at a quarter of the resolution, upsampled."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, resolution // 4, resolution // 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=resolution, mode="bilinear")
    return (smooth * 2 - 1).clamp(-1, 1)


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors as float16, which keeps the checkpoint small; the official model runs
    (in float32) with exactly these values, and loading casts them back."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


# ---- published tokenizers trained with Lightning (Open-MAGVIT2, IBQ, SimVQ) -----------------
class TrainingLossStandIn(torch.nn.Module):
    """What `lossconfig` builds in the fixtures: a small discriminator whose weights land under
    `loss.` in the state dict (and in the EMA copy) as the real loss module's do (the real one
    needs LPIPS's downloaded VGG weights)."""

    def __init__(self, **_ignored) -> None:
        super().__init__()
        self.discriminator = torch.nn.Conv2d(3, 4, 3)


def import_lightning_model(checkout: Path, *modules: str) -> list[ModuleType]:
    """Import the official model modules (e.g. ``src.Open_MAGVIT2.models.lfqgan``) from the
    checkout as its training script does, with `lightning` / `pytorch_lightning` replaced by
    stand-ins whose `LightningModule` is `torch.nn.Module` (the models' construction, encode
    and decode use nothing of Lightning; only training hooks do) and `main` by one whose
    `instantiate_from_config` builds `TrainingLossStandIn` for the loss and the named class
    otherwise."""
    stand_in = ModuleType("lightning")
    stand_in.LightningModule = torch.nn.Module
    main = ModuleType("main")
    main.instantiate_from_config = _instantiate
    sys.modules.update({"lightning": stand_in, "pytorch_lightning": stand_in, "main": main})
    sys.path.insert(0, str(checkout))
    return [importlib.import_module(name) for name in modules]


def _instantiate(config: dict):
    target = config["target"]
    if target == "loss":
        return TrainingLossStandIn()
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**config.get("params", {}))


def randomize(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Perturb every trainable parameter (norm scales away from 1, biases from 0) and round all
    floating state to float16 values, so that the checkpoint stored in float16 holds exactly
    the weights the official model ran with."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * scale)
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def distinct_ema(model: torch.nn.Module, differs, seed: int, scale: float = 0.05) -> list[str]:
    """Make `model.model_ema`'s copy of the parameters whose name `differs(name)` accepts
    differ from the training weights (float16 values); the other copies share the training
    weights' storage (one copy in the file). Returns the names that differ."""
    ema = model.model_ema
    generator = torch.Generator().manual_seed(seed)
    changed = []
    for name, param in model.named_parameters():
        if name not in ema.m_name2s_name:
            continue
        buffer = ema.m_name2s_name[name]
        if differs(name):
            noise = torch.randn(param.shape, generator=generator) * scale
            ema._buffers[buffer] = (param.detach() + noise).half().float()
            changed.append(name)
        else:
            ema._buffers[buffer] = param.data
    return changed


#: The small `ddconfig` of the Lightning fixtures (`dd` of the official encoder and decoder:
#: 32 channels, one res block, factor 2, 8 latent channels, 16x16 images).
SMALL_DDCONFIG = {
    "double_z": False,
    "z_channels": 8,
    "resolution": 16,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 1],
    "num_res_blocks": 1,
}
#: Their images: two, RGB, 16x16.
SMALL_IMAGES = (2, 3, 16, 16)


def lightning_model(cls, differs, **init_args: Any) -> tuple[torch.nn.Module, list[str]]:
    """The official class built under seed 0 with `init_args`, the stand-in loss and
    `use_ema=True`, its weights perturbed (`randomize`, seed 1), in evaluation mode, its EMA
    copy differing where `differs` accepts (`distinct_ema`, seed 3); and the names that differ."""
    torch.manual_seed(0)
    model = cls(**init_args, lossconfig={"target": "loss"}, use_ema=True)
    randomize(model, seed=1)
    model = model.eval()
    return model, distinct_ema(model, differs, seed=3)


@torch.no_grad()
def lightning_outputs(model, x: torch.Tensor, factor: int, *, encode, latents, codes) -> dict:
    """The official outputs on `x` of a model downsampling by `factor`: `indices_raw` and
    `reconstruction_raw` with the training weights, then inside `ema_scope()` (the official
    evaluation's weights) `latents(model, x)`, `indices`, `reconstruction` (`decode(quant)`)
    and `decoded` (`decode(codes(model, indices, shape))`); `encode(model, x)` gives the
    official `(quant, indices)`."""
    b, _, h, w = x.shape
    shape = (b, h // factor, w // factor)
    out = {}
    quant, indices = encode(model, x)
    out["indices_raw"] = indices.reshape(shape)
    out["reconstruction_raw"] = model.decode(quant)
    with model.ema_scope():
        out["latents"] = latents(model, x)
        quant, indices = encode(model, x)
        out["indices"] = indices.reshape(shape)
        out["reconstruction"] = model.decode(quant)
        out["decoded"] = model.decode(codes(model, indices, shape))
    return out


def write_lightning_fixture(
    model: torch.nn.Module, name: str, tensors: dict[str, torch.Tensor], **written: Any
) -> None:
    """`write_fixture(name, tensors, **written)` and the model's Lightning checkpoint
    `<name>.ckpt` beside it."""
    write_fixture(name, tensors, **written)
    save_lightning_checkpoint(model, written["out"] / f"{name}.ckpt")


def save_lightning_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """``{"state_dict": ..., "epoch", "global_step", "pytorch-lightning_version"}`` as Lightning
    writes it, the floating tensors in float16 (tensors sharing storage stay shared)."""
    converted: dict[tuple, torch.Tensor] = {}
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            ident = (value.untyped_storage().data_ptr(), value.storage_offset(), value.shape)
            value = converted.setdefault(ident, value.detach().half().clone())
        state[key] = value
    payload = {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.2.1"}
    torch.save({**payload, "state_dict": state}, path)


def released_configs(checkout: Path, configs: dict[str, str]) -> dict[str, dict]:
    """`{preset: model.init_args}` of the official config files of released tokenizers (what
    the adapters' presets must equal), each with `image_size`, the training data's size."""
    import yaml

    found = {}
    for preset, relative in configs.items():
        loaded = yaml.safe_load((checkout / relative).read_text())
        args = dict(loaded["model"]["init_args"])
        args.pop("lossconfig", None)
        args["image_size"] = loaded["data"]["init_args"]["train"]["params"]["config"]["size"]
        found[preset] = {"config": relative, **args}
    return found
