"""Named, versioned evaluation protocols: the registry, what a protocol fixes in a config (and
refuses), the images it measures, what eval.json records, and reports that say their protocol
and refuse to mix two."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import vqbench.protocols as protocols
from tests.engine_helpers import small_config
from tests.test_suite import small_suite
from vqbench import VQBenchError
from vqbench.build import build_model
from vqbench.cli import main
from vqbench.config import parse_run_config
from vqbench.data import read_rgb
from vqbench.distributed import World
from vqbench.evaluate import evaluate_split
from vqbench.protocols import (
    FolderData,
    Protocol,
    adm_center_crop,
    get_protocol,
    protocol_dataset,
    protocol_loader,
    recorded_protocol,
    register_protocol,
)

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


def adm_reference(pil_image, image_size):
    """guided-diffusion `image_datasets.py::center_crop_arr` (8fb3ad91), as LlamaGen copies it:
    the reference the protocol's resize is compared with."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(
        tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC
    )
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


def test_the_built_ins_and_what_they_fix():
    assert {"vqbench", "simvq128", "imagenet256"} <= set(protocols.protocol_names())
    imagenet = get_protocol("imagenet256")
    assert (imagenet.images, imagenet.resolution, imagenet.resize) == (50_000, 256, "adm")
    assert imagenet.eval_settings() == {
        "fid_backend": "clean-fid",
        "fid_mode": "legacy_tensorflow",
        "lpips_net": "vgg",
        "paper_batch_size": 64,
    }
    simvq = get_protocol("simvq128")
    assert simvq.eval_settings()["fid_backend"] == "pytorch-fid" and simvq.resolution == 128
    assert get_protocol("vqbench").eval_settings() == {}  # the run's own settings
    with pytest.raises(AttributeError):
        imagenet.version = 2  # frozen: a changed definition is a new version
    with pytest.raises(VQBenchError, match="unknown protocol 'imagenet265'; did you mean"):
        get_protocol("imagenet265")
    with pytest.raises(VQBenchError, match="FID backend 'tf'; use one of"):
        Protocol("bad_test", 1, "test", fid_backend="tf")
    with pytest.raises(VQBenchError, match="fid_mode is clean-fid's"):
        Protocol("bad_test", 1, "test", fid_backend="pytorch-fid", fid_mode="clean")
    with pytest.raises(VQBenchError, match="already registered"):
        register_protocol(Protocol("simvq128", 1, "another", resolution=64))


def test_a_protocol_from_an_entry_point_is_registered(monkeypatch):
    mine = Protocol("coco256_test", 1, "COCO val2017 at 256", images=5000, resolution=256)
    point = SimpleNamespace(name="coco256_test", value="pkg:COCO", load=lambda: lambda: mine)
    broken = SimpleNamespace(name="bad", value="pkg:missing", load=lambda: 1 / 0)
    monkeypatch.setattr(protocols, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(protocols, "_PROTOCOLS", dict(protocols._PROTOCOLS))
    monkeypatch.setattr(protocols, "entry_points", lambda group: [point])
    assert get_protocol("coco256_test") is mine
    monkeypatch.setattr(protocols, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(protocols, "entry_points", lambda group: [broken])
    with pytest.raises(VQBenchError, match="protocol entry point 'bad = pkg:missing' failed"):
        protocols.protocol_names()


def test_the_config_takes_the_protocols_settings_and_refuses_a_contradiction():
    base = small_config("vanilla", data={"resolution": 128})
    plain = parse_run_config(base, "test")
    assert plain.eval.protocol == "vqbench" and plain.eval.fid_backend == "torch-fidelity"
    simvq = parse_run_config({**base, "eval": {**base["eval"], "protocol": "simvq128"}}, "t")
    assert (simvq.eval.fid_backend, simvq.eval.paper_batch_size) == ("pytorch-fid", 64)
    # The protocol is an evaluation setting: the fingerprints of the run do not change.
    assert simvq.fingerprint() == plain.fingerprint()
    assert simvq.settings_fingerprint() == plain.settings_fingerprint()
    # A resolved config (every setting written out) parses again to the same protocol.
    again = parse_run_config(simvq.resolved(), "recorded")
    assert again.eval == simvq.eval
    bad = {**base, "eval": {**base["eval"], "protocol": "simvq128", "fid_backend": "clean-fid"}}
    with pytest.raises(VQBenchError) as err:
        parse_run_config(bad, "mine.yaml")
    assert "fid_backend: clean-fid contradicts protocol simvq128 v1" in str(err.value)
    assert "\n" not in str(err.value)
    at_128 = {**base, "eval": {**base["eval"], "protocol": "imagenet256"}}
    with pytest.raises(VQBenchError, match="evaluates at 256x256, data.resolution is 128"):
        parse_run_config(at_128, "mine.yaml")
    mode = {**base, "eval": {**base["eval"], "fid_mode": "clean"}}
    with pytest.raises(VQBenchError, match="fid_mode is clean-fid's"):
        parse_run_config(mode, "mine.yaml")


def test_the_adm_resize_is_the_reference_center_crop_arr():
    generator = torch.Generator().manual_seed(0)
    for height, width, size in [(600, 801, 256), (257, 300, 256), (90, 70, 32), (64, 64, 64)]:
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
        ours = adm_center_crop(image, size)
        expected = adm_reference(Image.fromarray(image.permute(1, 2, 0).numpy()), size)
        assert ours.shape == (3, size, size)
        np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), expected)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    generator = torch.Generator().manual_seed(1)
    for i in range(5):
        pixels = torch.randint(0, 256, (40 + i, 50, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy()).save(root / f"{i}.png")
    return root


def folder_data(root, resolution=32):
    return FolderData(str(root), resolution)


def test_the_protocol_dataset_is_resized_counted_and_split_as_the_protocol_says(folder):
    four = Protocol("four_adm_test", 1, "test", images=4, resolution=24, resize="adm")
    dataset = protocol_dataset(four, folder_data(folder))
    assert len(dataset) == 4  # the first four of five, in sorted order
    expected = adm_center_crop(read_rgb(folder / "3.png"), 24).float() / 127.5 - 1
    torch.testing.assert_close(dataset[3], expected)
    every = protocol_dataset(get_protocol("vqbench"), folder_data(folder))
    assert len(every) == 5 and every[0].shape == (3, 32, 32)
    batches = list(protocol_loader(four, folder_data(folder), batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 1]
    torch.testing.assert_close(batches[1][0], dataset[3])
    with pytest.raises(VQBenchError, match="measures 6 val images, the data holds 5"):
        protocol_dataset(Protocol("six_test", 1, "test", images=6), folder_data(folder))
    with pytest.raises(VQBenchError, match="measures the val split, not train"):
        protocol_dataset(four, folder_data(folder), split="train")
    embedded = SimpleNamespace(kind="embedded", resolution=32)
    with pytest.raises(VQBenchError, match="reads image folders"):
        protocol_dataset(four, embedded)


def test_eval_results_record_the_protocol_and_old_files_read_as_version_1():
    config = parse_run_config(small_config("vanilla"), "test")
    results = evaluate_split(build_model(config), config, CPU)
    assert (results["protocol"], results["protocol_version"]) == ("vqbench", 1)
    assert recorded_protocol(results) == ("vqbench", 1)
    assert recorded_protocol({"rfid": 1.0}) == ("vqbench", 1)  # written before protocols


def test_a_report_says_its_protocol_and_refuses_to_mix_two(tmp_path, capsys):
    suite = small_suite(tmp_path, seeds=[0])
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(["run", str(suite), "--out", str(runs), "--results", str(results)]) == 0
    report = (results / "mini.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("Protocol: "))
    assert line.startswith(
        "Protocol: vqbench v1: all validation images, shorter side to 32px bilinear "
        "(antialiased), centre crop; FID torch-fidelity; LPIPS vgg; paper PSNR/SSIM per batch "
        "of 64. "
    )
    assert line.endswith("rFID against the validation images.")
    # eval.json files written before protocols were recorded give the same report.
    evals = sorted((runs / "mini").rglob("eval*.json"))
    for path in evals:
        data = json.loads(path.read_text())
        del data["protocol"], data["protocol_version"]
        path.write_text(json.dumps(data))
    assert main(["report", str(runs / "mini"), "--results", str(results)]) == 0
    assert (results / "mini.md").read_text().split("## Notes")[0] == report.split("## Notes")[0]
    # One row under another protocol: one line naming both, exit 2, nothing written.
    first = json.loads(evals[0].read_text())
    evals[0].write_text(json.dumps({**first, "protocol": "simvq128", "protocol_version": 1}))
    (results / "mini.md").unlink()
    capsys.readouterr()
    assert main(["report", str(runs / "mini"), "--results", str(results)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x]
    assert len(err) == 1 and "a table mixes protocols: " in err[0]
    assert "simvq128 v1 (validation)" in err[0] and "vqbench v1 (validation)" in err[0]
    assert "--mixed-protocols" in err[0]
    assert not (results / "mini.md").exists()
    args = ["report", str(runs / "mini"), "--results", str(results), "--mixed-protocols"]
    assert main(args) == 0
    mixed = (results / "mini.md").read_text()
    assert "Protocols (mixed, --mixed-protocols): " in mixed and "not comparable" in mixed


def test_a_split_too_short_for_the_protocol_stops_training_before_anything_is_written(
    tmp_path, capsys
):
    config = small_config("vanilla", data={"resolution": 128}, eval={"protocol": "simvq128"})
    path = tmp_path / "simvq128.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x]
    assert len(err) == 1 and "measures 50,000 val images, the data holds 8" in err[0]
    assert not out.exists()


def test_a_protocol_that_resizes_its_own_way_needs_image_folders(monkeypatch):
    """Checked before anything trains or is evaluated, also where the protocol takes every
    image of the split: ADM's crop of the embedded crops is refused in one line (they are made
    at their resolution, not read as files)."""
    data = parse_run_config(small_config("vanilla", data={"resolution": 32}), "t").data
    monkeypatch.setattr(protocols, "_PROTOCOLS", dict(protocols._PROTOCOLS))
    register_protocol(Protocol("adm_all_test", 1, "ADM crop, every image", resize="adm"))
    with pytest.raises(VQBenchError, match="reads image folders .* not data.kind embedded"):
        protocols.check_protocol_images(data, "adm_all_test")
    protocols.check_protocol_images(data, "vqbench")  # the default reads any data
