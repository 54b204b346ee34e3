"""Datasets: image folders (ImageNet, COCO, any tree of images), WebDataset shards of them
(`ShardImages`, read as streams: `vqbench.shards`) and the embedded photos.

All yield float32 `(3, res, res)` images in [-1, 1] (`x / 127.5 - 1`), with the protocol's
transforms (SPEC section 1): train `Resize(res)` on the shorter side + `RandomCrop(res)`, no
flip; validation `Resize(res)` + `CenterCrop(res)`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import shutil
import stat
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vqbench import shards
from vqbench.errors import VQBenchError
from vqbench.files import atomic_write_text
from vqbench.shards import RawSample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# Photos bundled in the scikit-image wheel (SPEC section 5), split by source photo so that no
# validation crop shares a photo with training. `motorcycle_*` and the like are downloaded by
# scikit-image and therefore not used.
EMBEDDED_TRAIN = (
    "astronaut",
    "chelsea",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "brick",
    "grass",
    "clock",
    "page",
    "text",
    "cell",
)
EMBEDDED_VAL = ("coffee", "rocket", "coins", "gravel")


def to_model_range(image_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 `(..., 3, H, W)` to float32 in [-1, 1]: `x / 127.5 - 1`."""
    return image_uint8.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to uint8 (clamped and rounded): the form FID and the reports take."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _transform(train: bool, resolution: int):
    from torchvision.transforms import v2

    crop = v2.RandomCrop(resolution) if train else v2.CenterCrop(resolution)
    return v2.Compose([v2.Resize(resolution, antialias=True), crop])


def list_images(root: Path) -> list[Path]:
    """Every image under `root`, recursively, sorted (relative order is the file-list order).

    Symlinked folders are followed (ImageNet copies are often trees of links), each real folder
    once, so a link loop ends. Links whose target is missing are listed (`check_images` then
    names them) rather than silently dropped.
    """
    found, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        found += [Path(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


# ---- reading one image -------------------------------------------------------------------------
#: Pixel modes Pillow gives for .jpg/.jpeg/.png/.webp files, all converted by `rgb_pixels`.
SUPPORTED_MODES = frozenset(
    "1 L P RGB RGBX CMYK YCbCr LA La PA RGBA RGBa I I;16 I;16L I;16B I;16N".split()
)
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`rgb` over a white page with opacity `alpha` (uint8): `round(c a / 255 + 255 - a)`."""
    a = alpha.astype(np.int32)[..., None]
    return ((rgb.astype(np.int32) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def rgb_pixels(image) -> np.ndarray:
    """8-bit RGB `(H, W, 3)` of a Pillow image in any mode a .jpg/.png/.webp file can hold.

    * `L`, `1`: grey replicated (`1` is 0 or 255); `P`: its palette colours; `CMYK`, `YCbCr`:
      Pillow's conversion (CMYK as `(255 - c)(255 - k) / 255`, Adobe-inverted JPEGs included).
    * 16-bit greyscale (`I;16*`, and `I` as older Pillow reads 16-bit PNGs): the high byte,
      `v // 256` (values clipped to 0..65535), which is how Pillow reads 16-bit RGB PNGs, so a
      16-bit picture gives the same pixels whichever colour type stores it.
    * Transparency (an alpha channel, a palette's `tRNS`, a transparent colour key) is
      composited onto white, i.e. the picture as a viewer shows it on a white page: the colour
      under a transparent pixel is arbitrary (encoders often zero it). Reference pipelines
      (taming, SimVQ) call `convert("RGB")`, which drops alpha instead; ImageNet and COCO hold
      no transparent images, so the choice changes nothing there.
    """
    mode, key = image.mode, image.info.get("transparency")
    if mode not in SUPPORTED_MODES:
        raise VQBenchError(f"pixel mode {mode!r} is not one vqbench converts")
    if mode.startswith("I"):
        values = np.asarray(image).astype(np.int64)
        grey = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        if isinstance(key, int):
            rgb = composite_on_white(rgb, np.where(values == key, 0, 255))
        return rgb
    if mode in _ALPHA_MODES or key is not None:
        rgba = np.asarray(image.convert("RGBA"))
        return composite_on_white(rgba[..., :3], rgba[..., 3])
    return np.asarray(image.convert("RGB"))


def read_rgb(path: Path | io.BytesIO, name: str | None = None) -> torch.Tensor:
    """uint8 `(3, H, W)` of an image file (or of its bytes, called `name` in messages); a
    damaged file is one line naming it and the fix."""
    from PIL import Image

    name = name or f"image '{path}'"
    try:
        with Image.open(path) as image:
            pixels = rgb_pixels(image)
    except VQBenchError as err:
        raise VQBenchError(f"{name}: {err}; convert it to RGB") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VQBenchError(
            f"{name} cannot be decoded ({reason}); replace it with a readable copy "
            f"(removing it changes the data: start the run over), then run again"
        ) from None
    pixels = np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])
    return torch.from_numpy(pixels).permute(2, 0, 1)


_BOMB_FIX = "downscale it, or for trusted data raise the limit in a --plugin module"


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be a dataset image, from its header alone (fast), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "is a broken symbolic link" if os.path.islink(path) else "does not exist"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size == 0:
        return "is empty (0 bytes)"
    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
    except Image.DecompressionBombError as err:
        return f"is too large ({str(err).rstrip('.')}); {_BOMB_FIX}"
    except UnidentifiedImageError:
        return "is not an image Pillow can read (wrong extension, or not an image at all)"
    except (OSError, ValueError, SyntaxError) as err:
        return f"cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (
            f"has {width}x{height} pixels, more than Pillow's decompression-bomb limit of "
            f"{limit:,} (PIL.Image.MAX_IMAGE_PIXELS); {_BOMB_FIX}"
        )
    if mode not in SUPPORTED_MODES:
        return f"has pixel mode {mode!r}, which vqbench does not convert; convert it to RGB"
    return None


def check_images(paths: list[Path], where: str) -> None:
    """Every path is an image vqbench can read (headers only, in parallel), or one line naming
    the first that is not, how many more there are, and the fix.

    About 0.1 ms per image on a local disk (ImageNet's 1.28M images: a couple of minutes).
    """
    from PIL import Image

    blocks = [paths[i : i + 4096] for i in range(0, len(paths), 4096)]
    with warnings.catch_warnings():  # one line below instead of Pillow's warning per file
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=8) as pool:
            checked = pool.map(lambda block: [(p, image_problem(p)) for p in block], blocks)
            problems = [(p, problem) for block in checked for p, problem in block if problem]
    if problems:
        path, problem = problems[0]
        more = len(problems) - 1
        also = f" ({more} more of the {len(paths)} images cannot be used)" if more else ""
        raise VQBenchError(
            f"image '{path}' {problem}{also}; remove it from {where} or replace it with a "
            f"readable copy"
        )


def read_file_list(list_path: Path, root: Path) -> list[Path]:
    """The paths a `file_list` names (one path relative to `root` per line)."""
    if not list_path.is_file():
        what = "is a folder" if list_path.is_dir() else "does not exist"
        raise VQBenchError(
            f"file list '{list_path}' {what}; write one with "
            f"vqbench.data.write_balanced_subset or drop data.file_list"
        )
    try:
        lines = list_path.read_text().splitlines()
    except UnicodeDecodeError:
        raise VQBenchError(
            f"file list '{list_path}' is not a text file (UTF-8); it needs one image path "
            f"(relative to data.root) per line"
        ) from None
    except OSError as err:
        raise VQBenchError(f"file list '{list_path}' cannot be read ({err.strerror})") from None
    return [root / line.strip() for line in lines if line.strip()]


#: (root, listing) of the image folders this process has checked: each is checked once.
_CHECKED: set[tuple[str, int]] = set()


class ImageFolder(Dataset):
    """A folder of images listed recursively (ImageNet `train/<synset>/*.JPEG`, COCO `train2017/`).

    No label files are needed. `file_list` (one path relative to `root` per line) selects a
    subset. Every image is checked when the dataset is made (`check_images`: a file that is
    missing, empty, not an image, too large or of an unknown pixel mode is one line naming it),
    so a benchmark never trains on fewer images than it was given; a file whose pixel data is
    damaged beyond its header stops the run when it is read, naming the file.
    """

    def __init__(
        self,
        root: str | Path,
        resolution: int,
        train: bool,
        file_list: str | Path | None = None,
        check: bool = True,
        transform: Any = None,
    ) -> None:
        """`transform` (uint8 `(3, H, W)` to uint8 `(3, R, R)`) replaces the split's resize and
        crop (an evaluation protocol's, `vqbench.protocols`)."""
        self.root = Path(root)
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise VQBenchError(
                f"dataset folder '{self.root}' {what}; set data.root to "
                f"a folder of images (e.g. ImageNet's train/ or val/)"
            )
        if file_list is not None:
            self.paths = read_file_list(Path(file_list), self.root)
        else:
            self.paths = list_images(self.root)
        if not self.paths and file_list is not None:
            raise VQBenchError(f"file list '{file_list}' names no images; list one path a line")
        if not self.paths:
            raise VQBenchError(
                f"dataset folder '{self.root}' holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); check data.root"
            )
        key = (str(self.root.resolve()), hash(tuple(map(str, self.paths))))
        if check and key not in _CHECKED:
            where = f"file list '{file_list}'" if file_list else f"'{self.root}'"
            check_images(self.paths, where)
            _CHECKED.add(key)
        self.transform = transform or _transform(train, resolution)
        folders = sorted({p.parent for p in self.paths})
        index = {folder: i for i, folder in enumerate(folders)}
        #: Class of each image: its folder (ImageNet's synsets); one class for a flat folder.
        self.labels = [index[p.parent] for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_model_range(self.transform(read_rgb(self.paths[index])))


def check_held_out(train: Dataset, val: Dataset) -> None:
    """No validation image is also a training image (same path): a benchmark evaluates on
    held-out images (`vqbench eval --split train` measures the training images)."""
    if isinstance(train, ShardImages) and isinstance(val, ShardImages):
        shared = sorted(set(train.shards.urls) & set(val.shards.urls))
        if shared:
            raise VQBenchError(
                f"{len(shared)} validation shards are also training shards (e.g. "
                f"'{shared[0]}'); point data.val_urls at held-out shards"
            )
        return
    if not (isinstance(train, ImageFolder) and isinstance(val, ImageFolder)):
        return
    seen = {os.path.abspath(p) for p in train.paths}
    shared = [p for p in val.paths if os.path.abspath(p) in seen]
    if shared:
        raise VQBenchError(
            f"{len(shared)} of the {len(val.paths)} validation images are also training images "
            f"(e.g. '{shared[0]}'); point data.val_root (or data.val_file_list) at held-out images"
        )


def data_digest(dataset: Dataset) -> dict[str, Any] | None:
    """How many images an image folder lists and a hash of which (paths relative to its root),
    recorded at a run's first start so that a resumed run can tell it trains on the same
    images (None for the embedded photos, which the config determines). For shards: how many
    samples and a hash of the shard names and sizes."""
    if isinstance(dataset, ShardImages):
        return {"images": len(dataset), "listing": dataset.shards.digest()}
    if not isinstance(dataset, ImageFolder):
        return None
    prefix = str(dataset.root) + os.sep
    paths = map(str, dataset.paths)
    names = "\n".join(p.removeprefix(prefix) for p in paths)
    return {"images": len(dataset), "listing": hashlib.sha256(names.encode()).hexdigest()[:16]}


def class_labels(dataset: Dataset) -> list[int] | None:
    """The class of each image where the dataset has classes (image folders, shards with `cls`
    fields), else None."""
    return getattr(dataset, "labels", None)


def class_names(dataset: Dataset) -> list[str] | None:
    """The class name of each image (its folder under the root; for shards, the index's name
    of its `cls` value, else the value), or None where the data has no labels."""
    if isinstance(dataset, ShardImages):
        return dataset.class_names()
    if not isinstance(dataset, ImageFolder):
        return None
    return [p.parent.relative_to(dataset.root).as_posix() for p in dataset.paths]


def init_batches(dataset: Dataset, seed: int, batch_size: int, workers: int = 0):
    """`(images, labels or None)` batches for a quantizer's initialisation from data: the
    seeded, class-balanced order (`balanced_order`) of an indexable dataset; for shards, which
    are read as streams, every sample in a seeded order (the training order of an "epoch -1"
    on one process), class-balanced only in expectation."""
    if isinstance(dataset, ShardImages):
        return dataset.init_batches(seed, batch_size, workers)
    order = balanced_order(class_labels(dataset), len(dataset), seed)
    return labelled_batches(dataset, order, batch_size, workers)


def balanced_order(labels: list[int] | None, size: int, seed: int) -> list[int]:
    """A seeded random order of `range(size)` in which every prefix is class-balanced.

    Each class's images are shuffled, then taken one per class in turn (the classes in a
    fresh random order each round), so the first m images hold about m / classes of each
    class. Without labels, a plain random permutation.
    """
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(size, generator=generator).tolist()
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    queues = [
        [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
        for _, members in sorted(by_class.items())
    ]
    order: list[int] = []
    for round_ in range(max(len(q) for q in queues)):
        for c in torch.randperm(len(queues), generator=generator).tolist():
            if round_ < len(queues[c]):
                order.append(queues[c][round_])
    return order


def labelled_batches(dataset: Dataset, order: list[int], batch_size: int, workers: int = 0):
    """`(images, labels or None)` batches of `dataset` in `order`."""
    labels = class_labels(dataset)
    loader = DataLoader(
        torch.utils.data.Subset(dataset, order), batch_size=batch_size, num_workers=workers
    )
    for start, images in zip(range(0, len(order), batch_size), loader):
        chunk = order[start : start + batch_size]
        yield images, None if labels is None else torch.tensor([labels[i] for i in chunk])


def write_balanced_subset(
    root: str | Path, fraction: float, out_file: str | Path, seed: int = 0
) -> int:
    """Write a seeded, class-balanced subset list (the paper's 20% / 25% of ImageNet).

    A class is an image's parent folder; each class keeps `round(fraction * n)` of its images
    (at least one). Returns the number of images listed.
    """
    root = Path(root)
    if not 0 < fraction <= 1:
        raise VQBenchError(f"subset fraction={fraction} must be in (0, 1], e.g. 0.2")
    by_class: dict[Path, list[Path]] = {}
    for path in list_images(root):
        by_class.setdefault(path.parent, []).append(path)
    if not by_class:
        raise VQBenchError(f"dataset folder '{root}' holds no images; check the path")
    rng = random.Random(seed)
    chosen = []
    for folder in sorted(by_class):
        paths = by_class[folder]
        keep = max(1, round(fraction * len(paths)))
        chosen += sorted(rng.sample(paths, keep))
    atomic_write_text(out_file, "".join(f"{p.relative_to(root).as_posix()}\n" for p in chosen))
    return len(chosen)


def _embedded_photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


class EmbeddedPhotos(Dataset):
    """Crops of the real photos bundled with scikit-image: a download-free dataset.

    Each crop takes a random square of side between `resolution` and the photo's shorter side,
    resized to `resolution` (so scale varies); train and validation come from disjoint photos
    and are fixed for a seed. All crops are made once, as uint8, at construction.
    """

    def __init__(
        self, resolution: int, train: bool, size: int | None = None, seed: int = 0
    ) -> None:
        import torch.nn.functional as F

        names = EMBEDDED_TRAIN if train else EMBEDDED_VAL
        size = size if size is not None else (2048 if train else 256)
        if size <= 0:
            raise VQBenchError(f"embedded dataset size={size} must be positive")
        generator = torch.Generator().manual_seed(seed * 2 + int(train))
        photos = [torch.from_numpy(_embedded_photo(n)).permute(2, 0, 1) for n in names]
        crops = torch.empty(size, 3, resolution, resolution, dtype=torch.uint8)
        for i in range(size):
            photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
            h, w = photo.shape[1:]
            side = int(
                torch.randint(min(resolution, h, w), min(h, w) + 1, (1,), generator=generator)
            )
            top = int(torch.randint(h - side + 1, (1,), generator=generator))
            left = int(torch.randint(w - side + 1, (1,), generator=generator))
            patch = photo[:, top : top + side, left : left + side].unsqueeze(0).float()
            resized = F.interpolate(
                patch,
                size=(resolution, resolution),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            crops[i] = resized[0].round().clamp(0, 255).to(torch.uint8)
        self.images = crops
        self.names = names

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_model_range(self.images[index])


def build_dataset(
    kind: str,
    *,
    resolution: int,
    train: bool,
    root: str | None = None,
    file_list: str | None = None,
    size: int | None = None,
    seed: int = 0,
    urls: str | None = None,
    shuffle_buffer: int = 1000,
):
    if kind == "embedded":
        return EmbeddedPhotos(resolution, train, size=size, seed=seed)
    if kind == "webdataset":
        key = "data.urls" if train else "data.val_urls"
        if urls is None:
            raise VQBenchError(f"{key} is required for kind 'webdataset'; set it to the shards")
        return ShardImages(urls, resolution, train, key=key, buffer=shuffle_buffer, seed=seed)
    if kind == "imagefolder":
        if root is None:
            raise VQBenchError(
                "data.root is required for kind 'imagefolder'; set it to a folder of images"
            )
        return ImageFolder(root, resolution, train, file_list=file_list)
    raise VQBenchError(
        f"unknown dataset kind '{kind}'; use 'embedded', 'imagefolder' or 'webdataset'"
    )


def build_split(data, *, train: bool, seed: int = 0):
    """The training or validation split a run config's `data` section describes."""
    return build_dataset(
        data.kind,
        resolution=data.resolution,
        train=train,
        root=data.root if train else data.val_root,
        file_list=data.file_list if train else data.val_file_list,
        size=data.train_size if train else data.val_size,
        seed=seed,
        urls=data.urls if train else data.val_urls,
        shuffle_buffer=data.shuffle_buffer,
    )


class EpochBatches(Sampler[list[int]]):
    """The micro-batches of one training epoch for one process, resumable at any step.

    Each epoch shuffles with a generator seeded by `(seed, epoch)`; global batch `s` is
    positions `[s * B, (s + 1) * B)` of that order (B = micro x accumulation x world), and
    micro-batch `a` of process `r` is the `(a * world + r)`-th contiguous share of it. So a
    run on any number of processes sees the same global batches, and a resumed run starts
    at `start_step` without loading the batches it skips. (A `DistributedSampler` that can
    start mid-epoch.) Incomplete last batches are dropped.
    """

    def __init__(
        self,
        dataset_size: int,
        *,
        micro: int,
        accumulation: int,
        world: int,
        rank: int,
        seed: int,
        epoch: int,
        start_step: int = 0,
    ) -> None:
        self.size, self.micro, self.accumulation = dataset_size, micro, accumulation
        self.world, self.rank, self.seed, self.epoch = world, rank, seed, epoch
        self.start_step = start_step
        self.global_batch = micro * accumulation * world

    @property
    def steps(self) -> int:
        return self.size // self.global_batch

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accumulation

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        for step in range(self.start_step, self.steps):
            for a in range(self.accumulation):
                start = step * self.global_batch + (a * self.world + self.rank) * self.micro
                yield order[start : start + self.micro]


def shard_indices(size: int, world: int, rank: int) -> list[int]:
    """Evaluation share of one process: every image exactly once over all processes."""
    return list(range(rank, size, world))


def train_loader(
    dataset: Dataset, sampler: EpochBatches, *, workers: int = 0, device: torch.device | None = None
) -> DataLoader:
    """The epoch's micro-batches, with worker processes and pinned memory on CUDA (shards:
    read in this process, decoded by `workers` threads)."""
    if isinstance(dataset, ShardImages):
        return dataset.epoch_batches(sampler, threads=workers)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device is not None and device.type == "cuda",
    )


def eval_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    world: int = 1,
    rank: int = 0,
    workers: int = 0,
    device: torch.device | None = None,
) -> DataLoader:
    """This process's share of a split, in order, every image once over all processes:
    images r, r + W, r + 2W, ... of process r (W processes)."""
    if isinstance(dataset, ShardImages):
        return dataset.eval_batches(batch_size, world=world, rank=rank, threads=workers)
    subset = torch.utils.data.Subset(dataset, shard_indices(len(dataset), world, rank))
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device is not None and device.type == "cuda",
    )


# ---- WebDataset shards -------------------------------------------------------------------------
def crop_seed(seed: int, stream: str, position: int) -> int:
    """The seed of one sample's random crop: (run seed, stream, position in the stream)."""
    digest = hashlib.sha256(f"vqbench-crop/{seed}/{stream}/{position}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def decoded_batches(
    samples: Iterable[RawSample],
    size: int,
    decode: Callable[[RawSample], torch.Tensor],
    threads: int = 0,
    with_labels: bool = False,
) -> Iterator[Any]:
    """Batches of `size` decoded samples (the last may be shorter), in order. With `threads`,
    images are decoded by a thread pool (Pillow and torch release the GIL) while the stream is
    read ahead by at most two batches; without, in this thread."""

    def finish(batch: list[Any], chunk: list[RawSample]):
        images = torch.stack([b.result() if threads else b for b in batch])
        if not with_labels:
            return images
        labels = [s.label for s in chunk]
        return images, None if None in labels else torch.tensor(labels)

    iterator = iter(samples)
    chunks = iter(lambda: list(itertools.islice(iterator, size)), [])
    if not threads:
        for chunk in chunks:
            yield finish([decode(s) for s in chunk], chunk)
        return
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        try:
            for chunk in chunks:
                pending.append(([pool.submit(decode, s) for s in chunk], chunk))
                if len(pending) > 2:
                    yield finish(*pending.popleft())
            while pending:
                yield finish(*pending.popleft())
        finally:
            for futures, _ in pending:
                for future in futures:
                    future.cancel()


class ShardImages:
    """A split stored as WebDataset shards (`vqbench.shards`), read as streams.

    The same decoding, checks and transforms as `ImageFolder` (a member that cannot be decoded
    is one line naming the shard and the member), except that the training crop's offsets are
    drawn from a generator seeded by (seed, epoch, position) rather than from torch's global
    one, so that a resumed epoch crops its images as an uninterrupted one did. `len` is the
    number of samples (from the shards' index, or counted); `dataset[i]` reads the shards from
    the start up to sample i, which suits the first few images only (the figure strip).
    """

    def __init__(
        self, urls: str, resolution: int, train: bool, *, key: str, buffer: int, seed: int
    ) -> None:
        from torchvision.transforms import v2

        self.resolution, self.train, self.buffer, self.seed = resolution, train, buffer, seed
        self.shards = shards.open_shards(urls, key)
        #: Class of each sample in URL order (the `cls` fields), None where some shard has none.
        self.labels = self.shards.labels
        self._resize = v2.Resize(resolution, antialias=True)
        self._centre = v2.CenterCrop(resolution)

    def __len__(self) -> int:
        return self.shards.total

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        samples = shards.strided_samples(self.shards, 1, 0)
        sample = next(itertools.islice(samples, index, None))
        samples.close()
        return self.decode(sample, crop_seed(self.seed, "item", index))

    def class_names(self) -> list[str] | None:
        if self.labels is None:
            return None
        names = self.shards.classes or []
        return [names[i] if 0 <= i < len(names) else str(i) for i in self.labels]

    def decode(self, sample: RawSample, seed: int) -> torch.Tensor:
        """The sample's image, resized and cropped (random crop from `seed` when training)."""
        name = f"shard '{sample.url}' member '{sample.member}'"
        image = self._resize(read_rgb(io.BytesIO(sample.data), name))
        if not self.train:
            return to_model_range(self._centre(image))
        r, (h, w) = self.resolution, image.shape[1:]
        rng = random.Random(seed)  # RandomCrop's offsets: uniform over the valid positions
        top, left = rng.randint(0, h - r), rng.randint(0, w - r)
        return to_model_range(image[:, top : top + r, left : left + r])

    def epoch_batches(self, sampler: EpochBatches, threads: int = 0) -> Iterator[torch.Tensor]:
        """This process's micro-batches of the sampler's epoch from its `start_step` on:
        `steps x micro x accumulation` samples of its share (`shards.process_samples`), those
        of earlier steps skipped (read, not decoded)."""
        s = sampler
        per_step = s.micro * s.accumulation
        stream = shards.process_samples(
            self.shards, seed=s.seed, epoch=s.epoch, world=s.world, rank=s.rank, buffer=self.buffer
        )
        stream = itertools.islice(stream, s.start_step * per_step, s.steps * per_step)
        tag = f"epoch{s.epoch}"
        return decoded_batches(
            stream, s.micro, lambda x: self.decode(x, crop_seed(s.seed, tag, x.position)), threads
        )

    def eval_batches(
        self, batch_size: int, *, world: int, rank: int, threads: int = 0
    ) -> Iterator[torch.Tensor]:
        """Samples rank, rank + world, ... in URL and tar order, in batches."""
        stream = shards.strided_samples(self.shards, world, rank)
        return decoded_batches(
            stream, batch_size, lambda x: self.decode(x, crop_seed(self.seed, "eval", x.position)),
            threads,
        )  # fmt: skip

    def init_batches(self, seed: int, batch_size: int, threads: int = 0):
        """Every sample once, in the training order of an epoch -1 on one process, with labels."""
        stream = shards.process_samples(
            self.shards, seed=seed, epoch=-1, world=1, rank=0, buffer=self.buffer
        )
        return decoded_batches(
            stream, batch_size, lambda x: self.decode(x, crop_seed(seed, "init", x.position)),
            threads, with_labels=True,
        )  # fmt: skip


def write_shards(folder: str | Path, out: str | Path, shard_size: int, prefix: str = "train"):
    """`vqbench data shards`: an image folder as WebDataset shards `{prefix}-000000.tar`, ...
    of `shard_size` samples each, plus their index (`shards.INDEX_NAME`: counts, classes).

    The images are listed and checked as the folder loader does (`list_images`,
    `check_images`: a bad image is one line naming it), sorted; sample i is `{i:09d}.{ext}`
    (the file's bytes as they are) with `{i:09d}.cls` (its class: the index of its folder among
    the sorted folders, named in the index). Written into a temporary folder renamed to `out`
    at the end, so `out` is whole or absent; the same folder gives identical bytes.
    Returns (images, shards).
    """
    root, out = Path(folder), Path(out)
    if shard_size <= 0:
        raise VQBenchError(f"--shard-size {shard_size} must be a positive number of images")
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise VQBenchError(f"image folder '{root}' {what}; give a folder of images")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VQBenchError(f"--out '{out}' exists and is not empty; choose a new folder")
    paths = list_images(root)
    if not paths:
        raise VQBenchError(f"image folder '{root}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    check_images(paths, f"'{root}'")
    folders = sorted({p.parent for p in paths})
    label_of = {f: i for i, f in enumerate(folders)}
    classes = [f.relative_to(root).as_posix() for f in folders]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        infos = []
        for n, start in enumerate(range(0, len(paths), shard_size)):
            chunk = paths[start : start + shard_size]
            samples = (
                {
                    "__key__": f"{start + i:09d}",
                    p.suffix.lower().lstrip("."): p.read_bytes(),
                    "cls": str(label_of[p.parent]).encode(),
                }
                for i, p in enumerate(chunk)
            )
            shard = tmp / f"{prefix}-{n:06d}.tar"
            count = shards.write_tar(shard, samples)
            infos.append(shards.ShardInfo(str(shard), count, [label_of[p.parent] for p in chunk]))
        shards.write_index(tmp, shards.index_entries(infos), classes)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(paths), len(infos)
