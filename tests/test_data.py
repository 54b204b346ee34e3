import numpy as np
import pytest
import torch
from PIL import Image

from vqbench import VQBenchError
from vqbench.data import (
    EMBEDDED_TRAIN,
    EMBEDDED_VAL,
    EmbeddedPhotos,
    ImageFolder,
    build_dataset,
    to_uint8,
    write_balanced_subset,
)
from vqbench.models import check_resolution


def test_embedded_photos_are_deterministic_disjoint_and_in_range():
    train = EmbeddedPhotos(32, train=True, size=64, seed=0)
    val = EmbeddedPhotos(32, train=False, size=16, seed=0)
    assert not set(EMBEDDED_TRAIN) & set(EMBEDDED_VAL)
    assert len(train) == 64 and train[0].shape == (3, 32, 32) and train[0].dtype == torch.float32
    images = torch.stack([train[i] for i in range(64)])
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.2
    assert torch.equal(EmbeddedPhotos(32, train=True, size=64, seed=0).images, train.images)
    assert not torch.equal(EmbeddedPhotos(32, train=True, size=64, seed=1).images, train.images)
    # Round trip: the model range maps back onto the stored uint8 pixels exactly.
    assert torch.equal(to_uint8(train[5]), train.images[5])
    assert val.names == EMBEDDED_VAL


def write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_lists_recursively_and_applies_the_protocol_transforms(tmp_path):
    half = np.zeros((64, 128, 3), dtype=np.uint8)
    half[:, 64:] = 255  # left half black, right half white
    write_image(tmp_path / "n01" / "a.png", half)
    write_image(tmp_path / "n02" / "deep" / "b.JPEG", np.full((40, 50, 3), 128, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    val = ImageFolder(tmp_path, 32, train=False)
    assert [p.name for p in val.paths] == ["a.png", "b.JPEG"]
    image = val[0]
    assert image.shape == (3, 32, 32)
    # Resize(32) on the shorter side gives 32 x 64; the centre crop keeps columns 16..47.
    assert torch.all(image[:, :, :15] == -1) and torch.all(image[:, :, 17:] == 1)
    train = ImageFolder(tmp_path, 32, train=True)
    assert train[1].shape == (3, 32, 32)


def test_balanced_subset_list(tmp_path):
    for cls, n in (("a", 10), ("b", 20), ("c", 30)):
        for i in range(n):
            write_image(tmp_path / "root" / cls / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    listed = write_balanced_subset(tmp_path / "root", 0.2, tmp_path / "list.txt", seed=3)
    lines = (tmp_path / "list.txt").read_text().splitlines()
    assert listed == 12 and len(lines) == 12
    assert [sum(line.startswith(c + "/") for line in lines) for c in "abc"] == [2, 4, 6]
    write_balanced_subset(tmp_path / "root", 0.2, tmp_path / "again.txt", seed=3)
    assert (tmp_path / "again.txt").read_text() == (tmp_path / "list.txt").read_text()
    subset = ImageFolder(tmp_path / "root", 8, train=False, file_list=tmp_path / "list.txt")
    assert len(subset) == 12


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: build_dataset("imagefolder", resolution=32, train=True, root=str(p / "nope")),
            "dataset folder '.*nope' does not exist",
        ),
        (
            lambda p: build_dataset("imagefolder", resolution=32, train=True, root=str(p)),
            "holds no images",
        ),
        (
            lambda p: build_dataset("imagenet", resolution=32, train=True),
            "unknown dataset kind 'imagenet'",
        ),
        (
            lambda p: check_resolution(100, 16),
            "data.resolution=100 is not a positive multiple of "
            "the model's downsampling factor 16; use e.g. 96",
        ),
        (
            lambda p: ImageFolder(p, 32, train=True, file_list=p / "missing.txt"),
            "file list '.*missing.txt' does not exist",
        ),
    ],
)
def test_bad_data_input_gives_one_line(tmp_path, make, message):
    with pytest.raises(VQBenchError, match=message) as err:
        make(tmp_path)
    assert "\n" not in str(err.value)
