"""Datasets: image folders (ImageNet, COCO, any tree of images) and the embedded photos.

Both yield float32 `(3, res, res)` images in [-1, 1] (`x / 127.5 - 1`), with the protocol's
transforms (SPEC section 1): train `Resize(res)` on the shorter side + `RandomCrop(res)`, no
flip; validation `Resize(res)` + `CenterCrop(res)`.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vqbench.errors import VQBenchError

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
    return v2.Compose([v2.PILToTensor(), v2.Resize(resolution, antialias=True), crop])


def list_images(root: Path) -> list[Path]:
    """Every image under `root`, recursively, sorted (relative order is the file-list order)."""
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


class ImageFolder(Dataset):
    """A folder of images listed recursively (ImageNet `train/<synset>/*.JPEG`, COCO `train2017/`).

    No label files are needed. `file_list` (one path relative to `root` per line) selects a
    subset. Unreadable images are skipped with a warning and counted in `skipped`; the next
    readable image stands in, so an epoch never crashes on one bad file.
    """

    def __init__(
        self, root: str | Path, resolution: int, train: bool, file_list: str | Path | None = None
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise VQBenchError(
                f"dataset folder '{self.root}' does not exist; set data.root to "
                f"a folder of images (e.g. ImageNet's train/ or val/)"
            )
        if file_list is not None:
            list_path = Path(file_list)
            if not list_path.is_file():
                raise VQBenchError(
                    f"file list '{list_path}' does not exist; write one with "
                    f"vqbench.data.write_balanced_subset or drop data.file_list"
                )
            lines = [line.strip() for line in list_path.read_text().splitlines()]
            self.paths = [self.root / line for line in lines if line]
        else:
            self.paths = list_images(self.root)
        if not self.paths:
            raise VQBenchError(
                f"dataset folder '{self.root}' holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); check data.root"
            )
        self.transform = _transform(train, resolution)
        self.skipped = 0
        folders = sorted({p.parent for p in self.paths})
        index = {folder: i for i, folder in enumerate(folders)}
        #: Class of each image: its folder (ImageNet's synsets); one class for a flat folder.
        self.labels = [index[p.parent] for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return to_model_range(self.transform(image.convert("RGB")))

    def __getitem__(self, index: int) -> torch.Tensor:
        for attempt in range(len(self.paths)):
            i = (index + attempt) % len(self.paths)
            try:
                return self.load(i)
            except (OSError, ValueError) as err:
                self.skipped += 1
                warnings.warn(
                    f"skipping unreadable image {self.paths[i]} ({err}); "
                    f"{self.skipped} skipped so far",
                    stacklevel=2,
                )
        raise VQBenchError(f"no image under '{self.root}' could be read")


def class_labels(dataset: Dataset) -> list[int] | None:
    """The class of each image where the dataset has classes (image folders), else None."""
    return getattr(dataset, "labels", None)


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
    Path(out_file).write_text("".join(f"{p.relative_to(root).as_posix()}\n" for p in chosen))
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
):
    if kind == "embedded":
        return EmbeddedPhotos(resolution, train, size=size, seed=seed)
    if kind == "imagefolder":
        if root is None:
            raise VQBenchError(
                "data.root is required for kind 'imagefolder'; set it to a folder of images"
            )
        return ImageFolder(root, resolution, train, file_list=file_list)
    raise VQBenchError(f"unknown dataset kind '{kind}'; use 'embedded' or 'imagefolder'")


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
    """The epoch's micro-batches, with worker processes and pinned memory on CUDA."""
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
    """This process's share of a split, in order, every image once over all processes."""
    subset = torch.utils.data.Subset(dataset, shard_indices(len(dataset), world, rank))
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device is not None and device.type == "cuda",
    )
