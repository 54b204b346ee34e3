"""WebDataset shards (`vqbench.shards`, `data.kind: webdataset`), on shards the tests write from
tiny images: the converter, the exact epoch split over processes, resume, damage, bad config.

Every image is 32 x 32 at `data.resolution: 32` (resize and crop are the identity) with its
own colour in its corner pixel, so a decoded batch names the samples it holds.
"""

import json
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from tests.engine_helpers import final_weights, run_cli, small_config, write_config
from vqbench.cli import main
from vqbench.data import (
    EpochBatches,
    ImageFolder,
    ShardImages,
    build_dataset,
    check_held_out,
    class_names,
    eval_loader,
    init_batches,
    train_loader,
    write_shards,
)
from vqbench.errors import VQBenchError
from vqbench.shards import INDEX_NAME, expand_urls, open_shards, read_shard, tar_bytes

RES = 32


def write_images(root, count, classes=("cat", "dog"), start=0):
    """`count` PNGs spread over class folders; image i has corner pixel (i, 255 - i, 7)."""
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        pixels = rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)
        pixels[0, 0] = (i, 255 - i, 7)
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return root


def ids(batch: torch.Tensor) -> list[int]:
    """The image numbers of a decoded batch (their corner pixel's red value)."""
    return [round((float(v) + 1) * 127.5) for v in batch[:, 0, 0, 0]]


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    """13 training images in shards of 5, 5, 3, and 4 validation images in shards of 3, 1."""
    base = tmp_path_factory.mktemp("shards")
    write_images(base / "train_images", 13)
    write_images(base / "val_images", 4, start=100)
    write_shards(base / "train_images", base / "train", 5)
    write_shards(base / "val_images", base / "val", 3, prefix="val")
    return base


def train_urls(base):
    return str(base / "train" / "train-{000000..000002}.tar")


def val_urls(base):
    return str(base / "val" / "val-{000000..000001}.tar")


def shard_set(base, train=True, buffer=4, seed=0):
    urls = train_urls(base) if train else val_urls(base)
    return build_dataset(
        "webdataset", resolution=RES, train=train, urls=urls, shuffle_buffer=buffer, seed=seed
    )


def epoch_ids(dataset, *, world, rank, micro, accumulation=1, epoch=0, start_step=0, workers=0):
    sampler = EpochBatches(
        len(dataset), micro=micro, accumulation=accumulation, world=world, rank=rank, seed=0,
        epoch=epoch, start_step=start_step,
    )  # fmt: skip
    return [ids(batch) for batch in train_loader(dataset, sampler, workers=workers)]


# ---- the converter -----------------------------------------------------------------------------
def test_shards_hold_the_folder_with_labels_an_index_and_identical_bytes_on_a_rerun(
    shard_dirs, tmp_path
):
    names = sorted(p.name for p in (shard_dirs / "train").iterdir())
    assert names == ["train-000000.tar", "train-000001.tar", "train-000002.tar", INDEX_NAME]
    index = json.loads((shard_dirs / "train" / INDEX_NAME).read_text())
    assert index["classes"] == ["cat", "dog"]
    assert [index["shards"][n]["count"] for n in names[:3]] == [5, 5, 3]
    # Sorted by path: cat/img000, img002, ..., img012, then dog/img001, ...
    order = sorted(range(13), key=lambda i: (i % 2, i))
    samples = [s for n in names[:3] for s in read_shard(str(shard_dirs / "train" / n))]
    assert [s.label for s in samples] == [i % 2 for i in order]
    folder = shard_dirs / "train_images"
    for s, i in zip(samples, order):
        assert s.data == (folder / ("cat", "dog")[i % 2] / f"img{i:03d}.png").read_bytes()
    write_shards(folder, tmp_path / "again", 5)  # a re-run writes the same bytes
    for n in names:
        assert (tmp_path / "again" / n).read_bytes() == (shard_dirs / "train" / n).read_bytes()
    dataset = shard_set(shard_dirs)
    assert len(dataset) == 13 and dataset.labels == [i % 2 for i in order]
    assert class_names(dataset) == [("cat", "dog")[i % 2] for i in order]


def test_a_bad_image_is_one_line_and_nothing_is_written(tmp_path, capsys):
    write_images(tmp_path / "images", 3)
    (tmp_path / "images" / "cat" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = main(["data", "shards", str(tmp_path / "images"), "--out", str(out),
                 "--shard-size", "2"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 2 and printed.out == "" and len(printed.err.strip().splitlines()) == 1
    assert "broken.png" in printed.err and "is not an image" in printed.err
    assert sorted(os.listdir(tmp_path)) == ["images"]  # no shards, no temporary folder


def test_counting_without_an_index_equals_the_index(shard_dirs, tmp_path):
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar"):
        (tmp_path / name).write_bytes((shard_dirs / "train" / name).read_bytes())
    counted = open_shards(str(tmp_path / "train-{000000..000002}.tar"))
    indexed = open_shards(train_urls(shard_dirs))
    assert [s.count for s in counted.shards] == [s.count for s in indexed.shards] == [5, 5, 3]
    assert counted.labels == indexed.labels
    assert main(["data", "index", str(tmp_path / "train-{000000..000002}.tar")]) == 0
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["shards"]["train-000001.tar"]["count"] == 5


# ---- the epoch ---------------------------------------------------------------------------------
def split_worker(rank: int, port: int, base: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        dataset = shard_set(Path(base))
        seen = {e: epoch_ids(dataset, world=2, rank=rank, micro=2, epoch=e) for e in (0, 1)}
        val = [ids(b) for b in eval_loader(shard_set(Path(base), train=False), batch_size=1,
                                           world=2, rank=rank)]  # fmt: skip
        gathered = [None, None]
        dist.all_gather_object(gathered, {"train": seen, "val": val})
        if rank == 0:
            torch.save(gathered, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_see_disjoint_samples_whose_union_is_the_epoch(shard_dirs, tmp_path):
    out = tmp_path / "seen.pt"
    with socket.socket() as probe:  # a free port for the process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(split_worker, args=(port, str(shard_dirs), str(out)), nprocs=2, join=True)
    ranks = torch.load(out, weights_only=False)
    for epoch in (0, 1):
        per_rank = [r["train"][epoch] for r in ranks]
        # 13 samples, global batch 2 x 2 processes = 4: 3 steps, one micro-batch each per step.
        assert [len(steps) for steps in per_rank] == [3, 3]
        assert all(len(batch) == 2 for steps in per_rank for batch in steps)
        seen = [i for steps in per_rank for batch in steps for i in batch]
        assert len(seen) == len(set(seen)) == 12 and set(seen) <= set(range(13))
        # Each process read its own contiguous half of the epoch's shard sequence (6 of 13).
        assert not set(sum(per_rank[0], [])) & set(sum(per_rank[1], []))
        # The same order again in this process (seeded by seed, epoch and rank).
        dataset = shard_set(shard_dirs)
        for rank in (0, 1):
            assert epoch_ids(dataset, world=2, rank=rank, micro=2, epoch=epoch) == per_rank[rank]
    assert ranks[0]["train"][0] != ranks[0]["train"][1]  # each epoch is shuffled anew
    # Validation: every image once, process r taking images r, r + 2, ... in shard order
    # (cat/img100, cat/img102, dog/img101, dog/img103).
    assert ranks[0]["val"] == [[100], [101]] and ranks[1]["val"] == [[102], [103]]


@pytest.mark.parametrize("world, accumulation", [(1, 1), (2, 2)])
def test_resuming_at_step_k_continues_the_epoch_in_the_same_order(shard_dirs, world, accumulation):
    dataset = shard_set(shard_dirs, buffer=3)
    for rank in range(world):
        whole = epoch_ids(dataset, world=world, rank=rank, micro=1, accumulation=accumulation)
        assert len(whole) == 13 // (world * accumulation) * accumulation
        for k in (1, 2):
            tail = epoch_ids(dataset, world=world, rank=rank, micro=1,
                             accumulation=accumulation, start_step=k)  # fmt: skip
            assert tail == whole[k * accumulation :]
        # Decoding threads change nothing of the order.
        threaded = epoch_ids(dataset, world=world, rank=rank, micro=1, accumulation=accumulation,
                             workers=3)  # fmt: skip
        assert threaded == whole


def test_the_validation_images_equal_the_folders(shard_dirs):
    folder = ImageFolder(shard_dirs / "val_images", RES, train=False)
    shards = shard_set(shard_dirs, train=False)
    a = torch.cat(list(eval_loader(folder, batch_size=3)))
    b = torch.cat(list(eval_loader(shards, batch_size=3)))
    assert torch.equal(a, b) and torch.equal(shards[2], folder[2])
    assert class_names(shards) == class_names(folder)


def test_initialisation_from_data_sees_every_sample_once_with_its_label(shard_dirs):
    dataset = shard_set(shard_dirs)
    batches = list(init_batches(dataset, seed=0, batch_size=4, workers=2))
    seen = [i for images, _ in batches for i in ids(images)]
    labels = [int(y) for _, y in batches for y in y]
    assert sorted(seen) == list(range(13)) and labels == [i % 2 for i in seen]
    assert seen != sorted(seen, key=lambda i: (i % 2, i))  # shuffled, not in shard order
    with pytest.raises(VQBenchError, match="validation shards are also training shards"):
        check_held_out(dataset, shard_set(shard_dirs))


# ---- damage and bad input ----------------------------------------------------------------------
def copy_shards(shard_dirs, folder, index=True):
    folder.mkdir()
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar"):
        (folder / name).write_bytes((shard_dirs / "train" / name).read_bytes())
    if index:
        (folder / INDEX_NAME).write_bytes((shard_dirs / "train" / INDEX_NAME).read_bytes())
    return str(folder / "train-{000000..000002}.tar")


@pytest.mark.parametrize("index", [True, False])
def test_a_truncated_shard_is_one_line_naming_the_shard_and_the_member(shard_dirs, tmp_path, index):
    urls = copy_shards(shard_dirs, tmp_path / "cut", index)
    shard = tmp_path / "cut" / "train-000001.tar"
    data = shard.read_bytes()
    with tarfile.open(shard) as tar:  # cut inside the fourth member's data (an image)
        third, fourth = tar.getmembers()[2:4]
    assert fourth.name.endswith(".png") and fourth.size > 100
    shard.write_bytes(data[: fourth.offset_data + 100])
    with pytest.raises(VQBenchError) as err:
        ShardImages(urls, RES, True, key="data.urls", buffer=4, seed=0)
    message = str(err.value)
    assert "\n" not in message and f"shard '{shard}'" in message
    assert f"is damaged after member '{third.name}' (unexpected end of data)" in message


def test_a_shard_cut_between_members_is_found_by_its_index(shard_dirs, tmp_path):
    """A tar cut at a member boundary reads as a shorter, valid tar: the index's count (and
    size) tell it apart."""
    urls = copy_shards(shard_dirs, tmp_path / "cut")
    shard = tmp_path / "cut" / "train-000001.tar"
    with tarfile.open(shard) as tar:
        fourth, fifth = tar.getmembers()[3:5]
    shard.write_bytes(shard.read_bytes()[: fifth.offset])
    with pytest.raises(VQBenchError) as err:
        open_shards(urls)
    assert str(err.value).startswith(
        f"shard '{shard}' holds 2 samples but {INDEX_NAME} says 5 (it was changed or cut short "
        f"after member '{fourth.name}')"
    )


def test_a_member_that_is_not_an_image_is_one_line(tmp_path):
    good = tmp_path / "x.png"
    Image.fromarray(np.zeros((RES, RES, 3), np.uint8)).save(good)
    samples = [{"__key__": "000000000", "png": good.read_bytes(), "cls": b"0"},
               {"__key__": "000000001", "jpg": b"no image here", "cls": b"1"}]  # fmt: skip
    (tmp_path / "s-000000.tar").write_bytes(tar_bytes(samples))
    dataset = ShardImages(str(tmp_path / "s-000000.tar"), RES, False, key="data.val_urls",
                          buffer=4, seed=0)  # fmt: skip
    with pytest.raises(VQBenchError) as err:
        list(eval_loader(dataset, batch_size=2))
    message = str(err.value)
    assert "\n" not in message
    assert (
        f"shard '{tmp_path / 's-000000.tar'}' member '000000001.jpg' cannot be decoded" in message
    )
    no_image = [{"__key__": "000000000", "txt": b"hello"}]
    (tmp_path / "t-000000.tar").write_bytes(tar_bytes(no_image))
    with pytest.raises(VQBenchError, match="member '000000000' has no image"):
        open_shards(str(tmp_path / "t-000000.tar"))


def test_bad_urls_are_one_line(tmp_path, capsys):
    config = small_config("simvq", data={"kind": "webdataset", "resolution": RES})
    del config["data"]["train_size"], config["data"]["val_size"]
    code = main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out",
                 str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs data.urls and data.val_urls" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(VQBenchError, match="does not exist; check data.urls"):
        open_shards(str(tmp_path / "none-{0..1}.tar"))
    assert expand_urls("a-{0..2}.tar::b.tar") == ["a-0.tar", "a-1.tar", "a-2.tar", "b.tar"]


def test_the_shard_settings_are_in_the_fingerprint_and_absent_elsewhere(shard_dirs):
    from vqbench.config import parse_run_config

    four = parse_run_config(shard_config(shard_dirs, **RUN), "c.yaml")
    eight = shard_config(shard_dirs, **RUN)
    eight["data"]["shuffle_buffer"] = 8
    assert parse_run_config(eight, "c.yaml").fingerprint() != four.fingerprint()
    folder = small_config("simvq", data={"kind": "imagefolder", "root": "a", "val_root": "b",
                                         "urls": "x-{0..1}.tar"})  # fmt: skip
    with pytest.raises(VQBenchError, match="read with data.kind 'webdataset' only"):
        parse_run_config(folder, "c.yaml")


# ---- end to end --------------------------------------------------------------------------------
def shard_config(base, **train):
    config = small_config(
        "simvq",
        data={"kind": "webdataset", "resolution": RES, "urls": train_urls(base),
              "val_urls": val_urls(base), "shuffle_buffer": 4},
        loss={"perceptual_weight": 0.0, "gan_weight": 0.0},
        train={"batch_size": 4, **train},
        eval={"batch_size": 4, "metrics": ["usage", "psnr"]},
    )  # fmt: skip
    del config["data"]["train_size"], config["data"]["val_size"]
    return config


#: 3 steps an epoch (13 samples, batch 4); checkpoints at steps 2 and 4, both mid-epoch.
RUN = {"steps": 5, "checkpoint_every": 2, "keep_checkpoints": 5, "log_every": 1}


@pytest.fixture(scope="module")
def shard_run(shard_dirs, tmp_path_factory):
    """A run trained and evaluated on the shards, uninterrupted."""
    base = tmp_path_factory.mktemp("shard_run")
    config = write_config(base / "run.yaml", shard_config(shard_dirs, **RUN))
    done = run_cli("train", str(config), "--out", str(base / "run"), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    return base / "run"


def test_training_on_shards_and_on_the_folder_both_run_evaluate_and_probe(
    shard_dirs, shard_run, tmp_path
):
    """Shards and folder hold the same images; the training orders differ (shard order and
    buffer vs a permutation), so the weights differ, while the evaluated images, their count
    and the probe's classes are the same."""
    config = shard_config(shard_dirs, **RUN)
    config["data"] = {"kind": "imagefolder", "resolution": RES,
                      "root": str(shard_dirs / "train_images"),
                      "val_root": str(shard_dirs / "val_images")}  # fmt: skip
    folder = write_config(tmp_path / "f.yaml", config)
    done = run_cli("train", str(folder), "--out", str(tmp_path / "folder"), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    results = {
        name: json.loads((path / "eval.json").read_text())
        for name, path in (("shards", shard_run), ("folder", tmp_path / "folder"))
    }
    assert results["shards"]["images"] == results["folder"]["images"] == 4
    assert results["shards"]["psnr"] > 0 and 0 < results["shards"]["usage"] <= 1
    assert json.loads((shard_run / "env.json").read_text())["data"]["images"] == 13
    probe = tmp_path / "probe.yaml"
    probe.write_text("probe: {batch_size: 4, steps: 2, samples: 2, eval_batch_size: 4, "
                     "gfid: false, figure_samples: 2}\n")  # fmt: skip
    done = run_cli("probe", str(shard_run), "--config", str(probe), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    probed = json.loads((shard_run / "probe.json").read_text())
    assert probed["conditioning"] == "class-conditional (2 classes)"


def test_a_run_resumed_mid_epoch_ends_with_the_weights_of_an_uninterrupted_one(
    shard_dirs, shard_run, tmp_path
):
    """The interrupted run is killed while writing checkpoint 4 and resumes from step 2."""
    config = write_config(tmp_path / "run.yaml", shard_config(shard_dirs, **RUN))
    faults = str(Path(__file__).with_name("faults.py"))  # SIGKILL inside checkpoint 4
    interrupted = run_cli("--plugin", faults, "train", str(config), "--out", str(tmp_path / "cut"),
                          "--no-eval", env={"VQBENCH_KILL_AT": "state.pt#2"})  # fmt: skip
    assert interrupted.returncode == -9
    resumed = run_cli("train", str(config), "--out", str(tmp_path / "cut"), "--resume",
                      "--no-eval")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step-00000002" in resumed.stdout + resumed.stderr
    a, b = final_weights(shard_run), final_weights(tmp_path / "cut")
    for key in a:
        assert torch.equal(a[key], b[key]), key
