"""A trained tokenizer: images to code indices and back, for use in one's own code.

    from vqbench import Tokenizer

    tok = Tokenizer.from_run("runs/tiny/simvq-s0")      # the evaluated weights (model EMA)
    tok = Tokenizer.from_pretrained("exported/simvq")   # `vqbench export`, or "user/name"
    indices = tok.encode(images)    # float (B, 3, H, W) in [-1, 1] -> int64 (B, H/f, W/f)
    images = tok.decode(indices)    # -> float (B, 3, H, W) in [-1, 1]
    tok.index_sizes()               # values each index component takes, e.g. [1024]

Images are RGB in [-1, 1] (uint8 pixels `x / 127.5 - 1`, as vqbench's data pipeline makes
them), with H and W multiples of the model's downsampling `f` (`tok.downsampling`; the run was
trained at `tok.resolution`). A composite quantizer (residual, product) gives indices
`(B, H/f, W/f, D)`, one per stage or part, with `index_sizes()` of length D.

A `Tokenizer` is a `torch.nn.Module` with Hugging Face's `PyTorchModelHubMixin`:
`save_pretrained(DIR)` / `push_to_hub("user/name")` write `config.json` (what builds the model:
preset, quantizer and its resolved parameters, image size, the plugin that provides the
quantizer) and `model.safetensors`; `from_pretrained(DIR_or_id)` builds and loads them, every
damaged or mismatched file refused in one line.
"""

from __future__ import annotations

import sys
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, constants, hf_hub_download
from torch import nn

from vqbench.bounded import LIMITS, read_text
from vqbench.build import evaluated_weights, find_run, load_weights, run_config
from vqbench.distributed import pick_device
from vqbench.errors import VQBenchError
from vqbench.files import load_json
from vqbench.models import build_autoencoder
from vqbench.pretrained import offline, unreachable
from vqbench.quantizer import create_quantizer, get_quantizer_class, list_quantizers
from vqbench.registry import load_plugin
from vqbench.version import __version__

#: How far outside [-1, 1] an input may stray (float rounding) before it is refused.
RANGE_TOLERANCE = 1e-3
#: What `config.json` says it is, and the keys a tokenizer cannot be built without.
FORMAT, FORMAT_VERSION = "vqbench-tokenizer", 1
REQUIRED_KEYS = ("model", "quantizer", "resolution")
CONFIG_FILE, WEIGHTS_FILE = constants.CONFIG_NAME, constants.SAFETENSORS_SINGLE_FILE
_BUILT_IN = ("vqbench", "vqbench_quantizers")


def plugin_of(quantizer: str) -> dict[str, Any] | None:
    """Where the quantizer class registered as `quantizer` comes from, when not from vqbench:
    its module and the installed package (distribution) that holds it, or the plugin file."""
    module = get_quantizer_class(quantizer).__module__
    top = module.split(".")[0]
    packages = packages_distributions().get(top, [])
    if top in _BUILT_IN or "vqbench" in packages:
        return None
    if top.startswith("_vqbench_plugin_"):  # a file loaded with --plugin FILE.py
        file = getattr(sys.modules.get(module), "__file__", None) or module
        return {"quantizer": quantizer, "module": None, "package": None, "file": Path(file).name}
    package = packages[0] if packages else None
    return {"quantizer": quantizer, "module": module, "package": package, "file": None}


def require_quantizer(name: str, plugin: dict[str, Any] | None) -> None:
    """`name` is registered, its plugin module imported where needed; else one line naming
    the missing quantizer and the package or file that provides it."""
    if name in list_quantizers():
        return
    plugin = plugin if isinstance(plugin, dict) else {}
    module, package, file = plugin.get("module"), plugin.get("package"), plugin.get("file")
    if module:
        try:
            load_plugin(str(module))
        except VQBenchError:
            install = f"pip install {package}" if package else f"install the module '{module}'"
            raise VQBenchError(
                f"quantizer '{name}' comes from the plugin module '{module}'"
                f"{f' (package {package!r})' if package else ''}, which is not installed; "
                f"{install}"
            ) from None
        if name in list_quantizers():
            return
        raise VQBenchError(f"plugin module '{module}' registers no quantizer '{name}'")
    if file:
        raise VQBenchError(
            f"quantizer '{name}' comes from the plugin file '{file}', which is not loaded; pass "
            f"--plugin PATH/{file} (in Python: vqbench.registry.load_plugin('PATH/{file}'))"
        )
    get_quantizer_class(name)  # unknown, and no plugin named: the registry's one line


def _section(value: Any, key: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(f in value for f in fields[:1]):
        raise VQBenchError(
            f"config key '{key}' must be an object with {', '.join(fields)}; got {value!r:.60}"
        )
    return value


class Tokenizer(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vqbench",
    tags=["image-tokenizer", "vector-quantization", "vqbench"],
):
    """The encoder, quantizer and decoder of a trained run, in evaluation mode."""

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        quantizer: dict[str, Any] | None = None,
        resolution: int | None = None,
        plugin: dict[str, Any] | None = None,
        **info: Any,
    ) -> None:
        """Built from what `config.json` holds (random weights until they are loaded):
        `model` `{preset, overrides}`, `quantizer` `{name, params}`, the image side
        `resolution`, the `plugin` that provides the quantizer (None for vqbench's own);
        `info` keeps the rest (the weights' source, versions)."""
        super().__init__()
        given = {"model": model, "quantizer": quantizer, "resolution": resolution, **info}
        missing = [key for key in REQUIRED_KEYS if given.get(key) is None]
        if missing:
            raise VQBenchError(
                f"config lacks '{missing[0]}'; a tokenizer config needs "
                f"{', '.join(REQUIRED_KEYS)} (write it with vqbench export)"
            )
        form, version = info.get("format", FORMAT), info.get("format_version", FORMAT_VERSION)
        if form != FORMAT or not isinstance(version, int) or version > FORMAT_VERSION:
            raise VQBenchError(
                f"config format {form!r} version {version!r} is not a {FORMAT} of version "
                f"<= {FORMAT_VERSION}; export it with this vqbench, or upgrade vqbench"
            )
        model = _section(model, "model", ("preset", "overrides"))
        quantizer = _section(quantizer, "quantizer", ("name", "params"))
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
            raise VQBenchError(
                f"config key 'resolution' must be a positive integer, not {resolution!r}"
            )
        name, params = str(quantizer["name"]), quantizer.get("params") or {}
        require_quantizer(name, plugin)
        if not isinstance(params, dict) or not isinstance(model.get("overrides") or {}, dict):
            raise VQBenchError(
                "config keys 'quantizer.params' and 'model.overrides' must be objects"
            )
        self.model = build_autoencoder(
            str(model["preset"]),
            create_quantizer(name, **params),
            resolution,
            **(model.get("overrides") or {}),
        ).eval()
        self._resolution, self.plugin = resolution, plugin
        self._model_spec = {
            "preset": str(model["preset"]),
            "overrides": model.get("overrides") or {},
        }
        self.info = {k: v for k, v in info.items() if k in ("weights", "source")}
        self.card: str | None = None  # README.md: `vqbench export`'s model card, kept on load
        self._hub_mixin_config = self.export_config()  # what save_pretrained/push_to_hub write

    def export_config(self) -> dict[str, Any]:
        """`config.json`: what builds this tokenizer again (the quantizer's parameters resolved,
        every default filled in), and what it is."""
        q = self.model.quantizer
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vqbench_version": __version__,
            "model": dict(self._model_spec),
            "quantizer": {"name": q.name, "params": q.params.model_dump(mode="json")},
            "resolution": self._resolution,
            "downsampling": self.downsampling,
            "index_sizes": self.index_sizes(),
            "plugin": self.plugin,
            **self.info,
        }

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card `save_pretrained` and `push_to_hub` write: the exported one where this
        tokenizer has it, else the mixin's."""
        if self.card is not None:
            return ModelCard(self.card)
        return super().generate_model_card(*args, **kwargs)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_run(
        cls, run_dir: str | Path, *, use_ema: bool | None = None, device: str = "cpu"
    ) -> Tokenizer:
        """The run's latest checkpoint (or the `step-*` folder given); `use_ema` defaults to
        the run's `eval.use_ema`, i.e. the weights its evaluation measured. The plugins the run
        was made with are loaded again (`plugins.json`)."""
        device = str(pick_device(str(device)))
        run, checkpoint = find_run(run_dir)
        config = run_config(run)
        state, key = evaluated_weights(checkpoint, config, use_ema)
        for module in config.plugins:
            load_plugin(module)
        c = config.quantizer
        tok = cls(
            model={"preset": config.model.preset, "overrides": dict(config.model.overrides)},
            quantizer={"name": c.name, "params": dict(c.params)},
            resolution=config.data.resolution,
            plugin=plugin_of(c.name),
            format=FORMAT,
            weights="model_ema" if key == "ema" else "model",
            source={
                "run": config.name,
                "checkpoint": checkpoint.name,
                "fingerprint": config.fingerprint(),
                "seed": config.seed,
            },
        )
        load_weights(tok.model, state, checkpoint)
        tok.run_config = config
        return tok.to(device).eval()

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, *, device: str = "cpu", **kwargs: Any
    ) -> Tokenizer:
        """A tokenizer folder (`vqbench export`, `save_pretrained`) or a Hugging Face Hub id
        (`user/name`, downloaded into the Hub's cache; its cache only when offline or the Hub
        cannot be reached). Anything wrong is one line naming the tokenizer."""
        source = str(pretrained_model_name_or_path)
        device = str(pick_device(str(device)))
        if Path(source).is_dir():
            _check_folder(Path(source))
        elif Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise VQBenchError(
                f"tokenizer '{source}' is not a folder (nor a Hugging Face Hub id user/name); "
                f"give the folder vqbench export wrote"
            )
        else:
            kwargs["local_files_only"] = kwargs.get("local_files_only") or _hub_out_of_reach()
            _fetch(source, CONFIG_FILE, kwargs)
        try:
            return super().from_pretrained(source, map_location=str(device), **kwargs)
        except VQBenchError as err:
            raise VQBenchError(f"tokenizer '{source}': {err}") from None

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> Tokenizer:
        """The mixin's hook: build from the config's values, then load `model.safetensors`
        (every tensor, each of its shape: strict)."""
        tok = cls(**model_kwargs)
        if Path(model_id).is_dir():
            file = Path(model_id) / WEIGHTS_FILE
            card = Path(model_id) / "README.md"
            tok.card = read_text(card, LIMITS.json_bytes, "model card") if card.is_file() else None
        else:
            hub = {"revision": revision, "cache_dir": cache_dir, "token": token}
            hub.update(force_download=force_download, local_files_only=local_files_only)
            file = Path(_fetch(model_id, WEIGHTS_FILE, hub))
        load_weights(tok, _read_weights(file), file)
        return tok.to(map_location).eval()

    # ---- what it is --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def downsampling(self) -> int:
        """Pixels per token along each side: H and W must be multiples of it."""
        return self.model.downsampling

    @property
    def resolution(self) -> int:
        """The side of the images the run was trained on."""
        return self._resolution

    def index_sizes(self) -> list[int]:
        """How many values each component of an index takes (`[codebook_size]`, or one per
        stage or part of a composite)."""
        return list(self.model.quantizer.index_sizes())

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Float images `(B, 3, H, W)` in [-1, 1] to int64 indices `(B, H/f, W/f)` (`(B, H/f,
        W/f, D)` for a composite)."""
        self._check_images(images)
        z = self.model.encoder(images.to(self.device, torch.float32))
        return self.model.quantizer(z).indices

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices as `encode` gives them to images `(B, 3, H, W)`, clamped to [-1, 1]."""
        self._check_indices(indices)
        return self.model.decode_indices(indices.to(self.device)).float().clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction evaluation measures (`vqbench.evaluate.evaluate_split`): the
        model's forward pass, clamped to [-1, 1]."""
        self._check_images(images)
        return self.model(images.to(self.device, torch.float32))[0].float().clamp(-1, 1)

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.downsampling
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise VQBenchError(f"encode takes images (B, 3, H, W); got {shape}")
        if not images.is_floating_point():
            raise VQBenchError(
                f"encode takes float images in [-1, 1], got {images.dtype}; convert uint8 "
                f"pixels with x / 127.5 - 1"
            )
        if images.shape[2] % f or images.shape[3] % f:
            raise VQBenchError(
                f"encode: H and W must be multiples of the downsampling {f}; got "
                f"{images.shape[2]} x {images.shape[3]} (the run was trained at "
                f"{self.resolution} x {self.resolution})"
            )
        low, high = images.min().item(), images.max().item()
        if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise VQBenchError(
                f"encode takes images in [-1, 1]; these range over [{low:g}, {high:g}] "
                f"(uint8 pixels: x / 127.5 - 1; [0, 1] images: 2 * x - 1)"
            )

    def _check_indices(self, indices: torch.Tensor) -> None:
        sizes = self.index_sizes()
        want = 3 if len(sizes) == 1 else 4
        shape = "(B, h, w)" if want == 3 else f"(B, h, w, {len(sizes)})"
        if (
            not isinstance(indices, torch.Tensor)
            or indices.dim() != want
            or (want == 4 and indices.shape[-1] != len(sizes))
        ):
            got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices)
            raise VQBenchError(f"decode takes indices {shape} as encode gives them; got {got}")
        if indices.is_floating_point() or indices.is_complex():
            raise VQBenchError(f"decode takes integer indices; got {indices.dtype}")
        limits = torch.tensor(sizes, device=indices.device)
        if indices.numel() and (
            indices.min() < 0 or (indices.reshape(-1, len(sizes)) >= limits).any()
        ):
            raise VQBenchError(
                f"decode: indices must lie in [0, size) for index sizes {sizes}; got values "
                f"from {int(indices.min())} to {int(indices.max())}"
            )


# ---- files -------------------------------------------------------------------------------------
def _check_folder(folder: Path) -> None:
    """A tokenizer folder holds both files, and its config is a JSON object."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise VQBenchError(
                f"tokenizer '{folder}' lacks {name}; give a folder written by vqbench export"
            )
    if not isinstance(load_json(folder / CONFIG_FILE), dict):
        raise VQBenchError(f"'{folder / CONFIG_FILE}' must hold a JSON object")


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as err:  # truncated, not safetensors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VQBenchError(
            f"'{file}' cannot be read ({reason}); it may be truncated: export it again"
        ) from None


def _hub_out_of_reach() -> bool:
    """Offline, or the Hub does not answer within seconds: use the Hub's cache only."""
    return offline() or unreachable(constants.ENDPOINT) is not None


def _fetch(repo_id: str, filename: str, kwargs: dict[str, Any]) -> str:
    """`hf_hub_download` of one file of a Hub repository, a failure in one line."""
    keys = ("revision", "cache_dir", "token", "force_download", "local_files_only")
    try:
        return hf_hub_download(
            repo_id=repo_id, filename=filename, **{k: kwargs[k] for k in keys if k in kwargs}
        )
    except Exception as err:  # not found, offline and not cached, no network, bad id
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        where = "in the Hub's cache" if kwargs.get("local_files_only") else "on the Hub"
        hint = (
            "" if not kwargs.get("local_files_only") else " (offline or the Hub cannot be reached)"
        )
        raise VQBenchError(
            f"tokenizer '{repo_id}': {filename} not found {where}{hint} "
            f"({type(err).__name__}{f': {reason[:120]}' if reason else ''}); check the id, "
            f"or download it where there is network, or give a local folder"
        ) from None
