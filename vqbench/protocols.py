"""Named, versioned evaluation protocols: everything that decides an evaluation's numbers.

A `Protocol` is a frozen record with a name and a version. It fixes which split is measured
and how many of its images, how they are resized and centre-cropped, the FID backend (and
clean-fid's mode), the LPIPS network and the batch of the paper's batch PSNR/SSIM. A field left
`None` is not fixed by the protocol: the run's config decides it (`eval.*`, `data.resolution`).
Built-ins:

* `vqbench` (the default, version 1): what vqbench's runs have always done. The whole split
  the run is evaluated on, shorter side to `data.resolution` (torchvision bilinear, antialiased,
  as SimVQ's `T.Resize`) and centre crop; FID backend, LPIPS net and paper batch as the eval
  config says. Every `eval.json` written before protocols existed (no `protocol` field) was made
  this way and is read as `vqbench` version 1 (`recorded_protocol`).
* `simvq128`: the SimVQ / Group-VQ Table 1 setting (SPEC section 1, reference/protocol.md 2.6,
  2.7): the 50,000 ImageNet validation images, Resize(128) bilinear + CenterCrop(128),
  pytorch-fid on float images, LPIPS-VGG, PSNR/SSIM per batch of 64 beside the per-image PSNR.
* `imagenet256`: the 50,000 validation images at 256x256 as LlamaGen's tokenizer evaluation
  and the ADM evaluator prepare them (ADM's `center_crop_arr`: BOX halving while the shorter
  side is at least twice 256, PIL bicubic to 256, centre crop), clean-fid in its
  `legacy_tensorflow` mode (TensorFlow's Inception and resize, closest to the ADM evaluator
  that LlamaGen's numbers come from), LPIPS-VGG; the per-image PSNR beside the
  batch-of-64 PSNR/SSIM columns.

A changed definition is a new version, never an edit of a published one. Other packages add
protocols through the entry-point group `vqbench.protocols` (an entry point names a `Protocol`
object or a function returning one).

Public API (also used by the published-tokenizer adapters):

* `get_protocol(name) -> Protocol`, `protocol_names()`, `register_protocol(protocol)`;
* `protocol_dataset(protocol, data, split="val", seed=0)`: the protocol's images of a data
  config's split (`data.kind/root/val_root/file_list/val_file_list/resolution/val_size`, any
  object with those attributes, e.g. `vqbench.config.DataConfig`, or `FolderData(root,
  resolution, file_list)` for one folder of images), transformed and counted as the protocol
  says; `protocol_loader(protocol, data, batch_size=...)`, this process's share of it in order;
* `protocol_metrics(eval_config, codebook_size=..., ...)`: the metrics of an eval config
  (`vqbench.config.EvalConfig`, whose `protocol` field has been applied at validation);
* `Protocol.eval_settings()`, the `eval.*` keys it fixes; `Protocol.label` (`name vN`) and
  `Protocol.describe()`, what a report prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from vqbench.data import ImageFolder, build_split, eval_loader
from vqbench.errors import VQBenchError, did_you_mean
from vqbench.metrics import Metric, build_metrics
from vqbench.metrics.fid import BACKENDS, CLEANFID_MODES

ENTRY_POINT_GROUP = "vqbench.protocols"
DEFAULT_PROTOCOL = "vqbench"
#: The version an `eval.json` without a `protocol_version` field was made with.
LEGACY_VERSION = 1
#: How images are brought to the protocol's size (`Protocol.resize`).
RESIZES = ("bilinear", "adm")
SPLITS = ("val", "train")
#: `Protocol` fields that fix the `eval.*` setting of the same name.
EVAL_KEYS = ("fid_backend", "fid_mode", "lpips_net", "paper_batch_size")


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol; `None` leaves a setting to the run's config."""

    name: str
    version: int
    description: str
    split: str | None = "val"  # the split measured (rFID against it); None: `--split`
    images: int | None = None  # the first N images of the split (sorted paths); None: all
    resolution: int | None = None  # shorter side and centre crop; None: data.resolution
    resize: str = "bilinear"  # RESIZES
    fid_backend: str | None = None
    fid_mode: str | None = None  # clean-fid's mode
    lpips_net: str | None = None
    paper_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.version, int) or self.version < 1:
            raise VQBenchError(f"protocol {self.name!r}: needs a name and a version >= 1")
        if self.resize not in RESIZES:
            raise VQBenchError(
                f"protocol {self.name!r}: resize {self.resize!r}; use one of {', '.join(RESIZES)}"
            )
        if self.split is not None and self.split not in SPLITS:
            raise VQBenchError(f"protocol {self.name!r}: split {self.split!r}; use val or train")
        if self.fid_backend is not None and self.fid_backend not in BACKENDS:
            raise VQBenchError(
                f"protocol {self.name!r}: FID backend {self.fid_backend!r}; use one of "
                f"{', '.join(BACKENDS)}"
            )
        if self.fid_mode is not None and (
            self.fid_backend != "clean-fid" or self.fid_mode not in CLEANFID_MODES
        ):
            raise VQBenchError(
                f"protocol {self.name!r}: fid_mode is clean-fid's ({', '.join(CLEANFID_MODES)})"
            )

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def eval_settings(self) -> dict[str, Any]:
        """The `eval.*` settings this protocol fixes (key -> value)."""
        return {key: getattr(self, key) for key in EVAL_KEYS if getattr(self, key) is not None}

    def describe(
        self, split: str | None = None, resolution: int | None = None, eval_config: Any = None
    ) -> str:
        """One line: what the protocol fixes, with what it leaves free filled in from a run's
        `split`, `data.resolution` and eval config where given (for report notes)."""
        split = self.split or split
        size = self.resolution or resolution
        fid = self.fid_backend or getattr(eval_config, "fid_backend", None)
        mode = self.fid_mode or (getattr(eval_config, "fid_mode", None) if fid else None)
        lpips = self.lpips_net or getattr(eval_config, "lpips_net", None)
        count = f"{self.images:,}" if self.images else "all"
        batch = self.paper_batch_size or getattr(eval_config, "paper_batch_size", None)
        words = {"val": "validation", "train": "training", None: "evaluated"}[split]
        resize = {"bilinear": "bilinear (antialiased)", "adm": "ADM center_crop_arr (bicubic)"}
        return (
            f"{self.label}: {count} {words} images, shorter side to "
            f"{f'{size}px' if size else 'data.resolution'} {resize[self.resize]}, centre crop; "
            f"FID {fid or 'eval.fid_backend'}{f' ({mode})' if mode else ''}; LPIPS "
            f"{lpips or 'eval.lpips_net'}; paper PSNR/SSIM per batch of "
            f"{batch or 'eval.paper_batch_size'}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def transform(self, resolution: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """uint8 `(3, H, W)` to uint8 `(3, R, R)`; None: the image folder's own (bilinear)."""
        if self.resize == "bilinear":
            return None
        return lambda image: adm_center_crop(image, resolution)


def adm_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """ADM's `center_crop_arr` (guided-diffusion `image_datasets.py`, copied by LlamaGen's
    tokenizer evaluation): halve with a BOX filter while the shorter side is at least `2 size`,
    resize with PIL bicubic so that the shorter side is `size`, crop the centre."""
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    while min(*pil.size) >= 2 * size:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = size / min(*pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    arr = np.array(pil)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    crop = np.ascontiguousarray(arr[top : top + size, left : left + size])
    return torch.from_numpy(crop).permute(2, 0, 1)


VQBENCH = Protocol(
    DEFAULT_PROTOCOL,
    1,
    "what vqbench runs do by default: the run's data and eval settings",
    split=None,
)
SIMVQ128 = Protocol(
    "simvq128",
    1,
    "SimVQ / Group-VQ Table 1: ImageNet val at 128x128, pytorch-fid, batch PSNR/SSIM of 64",
    images=50_000,
    resolution=128,
    fid_backend="pytorch-fid",
    lpips_net="vgg",
    paper_batch_size=64,
)
IMAGENET256 = Protocol(
    "imagenet256",
    1,
    "ImageNet val at 256x256 as LlamaGen and the ADM evaluator prepare it, clean-fid "
    "legacy_tensorflow",
    images=50_000,
    resolution=256,
    resize="adm",
    fid_backend="clean-fid",
    fid_mode="legacy_tensorflow",
    lpips_net="vgg",
    paper_batch_size=64,
)

_PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (VQBENCH, SIMVQ128, IMAGENET256)}
_ENTRY_POINTS_LOADED = False


def register_protocol(protocol: Protocol, *, override: bool = False) -> Protocol:
    """Add `protocol` under its name; a taken name with another definition needs `override`."""
    if not isinstance(protocol, Protocol):
        raise VQBenchError(f"register_protocol needs a Protocol, not {type(protocol).__name__}")
    existing = _PROTOCOLS.get(protocol.name)
    if existing is not None and existing != protocol and not override:
        raise VQBenchError(
            f"protocol '{protocol.name}' is already registered ({existing.label}); pick another "
            f"name, or give a changed definition a new version with override=True"
        )
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            protocol = obj if isinstance(obj, Protocol) else obj()
        except Exception as err:
            raise VQBenchError(
                f"protocol entry point '{ep.name} = {ep.value}' failed to load ({err}); fix or "
                f"uninstall the package that declares it"
            ) from None
        if ep.name not in _PROTOCOLS:
            register_protocol(protocol)


def protocol_names() -> list[str]:
    _load_entry_points()
    return sorted(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol registered as `name`; an unknown name is one line listing the known."""
    _load_entry_points()
    try:
        return _PROTOCOLS[name]
    except KeyError:
        raise VQBenchError(
            f"unknown protocol '{name}';{did_you_mean(name, _PROTOCOLS)} known: "
            f"{', '.join(sorted(_PROTOCOLS))}"
        ) from None


def recorded_protocol(result: dict[str, Any]) -> tuple[str, int]:
    """(name, version) an `eval.json` was made under; files written before protocols were
    recorded (no field) are `vqbench` version 1, which is what every run did then."""
    name = result.get("protocol", DEFAULT_PROTOCOL)
    return str(name), int(result.get("protocol_version", LEGACY_VERSION))


def check_split(protocol: Protocol, split: str) -> None:
    if protocol.split is not None and split != protocol.split:
        raise VQBenchError(
            f"protocol {protocol.label} measures the {protocol.split} split, not {split}; drop "
            f"--split or choose a protocol that leaves the split free (e.g. vqbench)"
        )


def protocol_dataset(protocol: Protocol, data: Any, split: str = "val", seed: int = 0) -> Dataset:
    """The images `protocol` measures of a data config's `split`: resized and cropped as it
    says, the first `protocol.images` of the split (in the folder's sorted order), or one line
    when the split holds fewer."""
    check_split(protocol, split)
    train = split == "train"
    resolution = protocol.resolution or data.resolution
    transform = protocol.transform(resolution)
    if transform is None and resolution == data.resolution:
        dataset = build_split(data, train=train, seed=seed)
    else:
        check_data_kind(protocol, data)
        root, files = (data.root, data.file_list) if train else (data.val_root, data.val_file_list)
        dataset = ImageFolder(root, resolution, train=False, file_list=files, transform=transform)
    if protocol.images is None:
        return dataset
    if len(dataset) < protocol.images:
        raise VQBenchError(
            f"protocol {protocol.label} measures {protocol.images:,} {split} images, the data "
            f"holds {len(dataset):,}; point the data at the full split (e.g. ImageNet's val/) "
            f"or use a protocol that takes all images (vqbench)"
        )
    return dataset if len(dataset) == protocol.images else Subset(dataset, range(protocol.images))


def check_data_kind(protocol: Protocol, data: Any) -> None:
    """A protocol that resizes its own way reads image folders (one line otherwise)."""
    resolution = protocol.resolution or data.resolution
    own_way = protocol.transform(resolution) is not None or resolution != data.resolution
    if own_way and data.kind != "imagefolder":
        raise VQBenchError(
            f"protocol {protocol.label} reads image folders (data.kind: imagefolder), not "
            f"data.kind {data.kind}; point data.root and data.val_root at images"
        )


def check_protocol_images(data: Any, protocol_name: str) -> None:
    """A protocol of N images finds them in the data's split, and a protocol that resizes
    its own way finds image folders (one line otherwise): checked before a run trains or a
    tokenizer is evaluated, so that its evaluation cannot fail on the data afterwards."""
    protocol = get_protocol(protocol_name)
    check_data_kind(protocol, data)
    if protocol.images is not None:
        protocol_dataset(protocol, data, protocol.split or "val")


def protocol_loader(
    protocol: Protocol,
    data: Any,
    *,
    batch_size: int,
    split: str = "val",
    world: int = 1,
    rank: int = 0,
    device: torch.device | None = None,
) -> torch.utils.data.DataLoader:
    """This process's share of `protocol_dataset`, in order (every image once over all
    processes), batches of `batch_size` images in [-1, 1]."""
    dataset = protocol_dataset(protocol, data, split)
    workers = getattr(data, "workers", 0)
    return eval_loader(
        dataset, batch_size=batch_size, world=world, rank=rank, workers=workers, device=device
    )


class FolderData:
    """The data-config fields `protocol_dataset` reads, for one folder of images (both splits;
    `file_list`: one path relative to `root` per line)."""

    kind = "imagefolder"
    train_size = val_size = None
    urls = val_urls = None  # the shard fields of `DataConfig`, unused by folders
    shuffle_buffer = 1
    workers = 0

    def __init__(self, root: str, resolution: int, file_list: str | None = None) -> None:
        self.root = self.val_root = str(root)
        self.file_list = self.val_file_list = file_list
        self.resolution = resolution


def protocol_metrics(
    eval_config: Any,
    *,
    codebook_size: int,
    code_groups: torch.Tensor | None = None,
    index_sizes: list[int] | None = None,
    device: torch.device | str = "cpu",
) -> list[Metric]:
    """The metrics of an eval config (`vqbench.config.EvalConfig`) under its protocol."""
    c = eval_config
    protocol = get_protocol(c.protocol)
    return build_metrics(
        c.metrics,
        codebook_size=codebook_size,
        code_groups=code_groups,
        index_sizes=index_sizes,
        lpips_net=c.lpips_net,
        lpips_weights=c.lpips_weights,
        inception_weights=c.inception_weights,
        fid_backend=c.fid_backend,
        fid_mode=c.fid_mode,
        fid_stats=c.fid_stats if "fid" in c.metrics else None,
        fid_protocol=protocol.label,
        paper_batch=c.paper_batch_size,
        device=device,
    )
