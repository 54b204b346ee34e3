"""Reliability: bad input is one line, exit code 2 and nothing written; no run is lost or
silently wrong (locks, checksums, fingerprints, a log that reads as one run, names that stay
inside the output folder). Kill -9 at chosen moments is in `test_kills.py`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.engine_helpers import final_weights, run_cli, small_config, write_config
from vqbench.cli import main

FAULTS = str(Path(__file__).with_name("faults.py"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ beside plugins


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "%|" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vqbench: error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for folders)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def images(folder: Path, count: int = 8, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.full((size, size, 3), 20 * i, np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def image_config(train: Path, val: Path, **data) -> dict:
    config = small_config("simvq", steps=2)
    config["data"] = {"kind": "imagefolder", "root": str(train), "val_root": str(val)}
    config["data"].update(resolution=32, **data)
    return config


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------
def _config(edit):
    def make(tmp: Path) -> list[str]:
        config = small_config("simvq", steps=2)
        edit(config, tmp)
        return ["train", str(write_config(tmp / "c.yaml", config)), "--out", str(tmp / "run")]

    return make


def _with_data(make_folder, **data):
    def make(tmp: Path) -> list[str]:
        val = images(tmp / "val")
        config = image_config(make_folder(tmp), val, **data)
        return ["train", str(write_config(tmp / "c.yaml", config)), "--out", str(tmp / "run")]

    return make


def _text_jpg(tmp: Path) -> Path:
    folder = images(tmp / "train")
    (folder / "notes.jpg").write_text("this is text, not a JPEG")
    return folder


def _huge_png(tmp: Path) -> Path:
    """A PNG whose header claims 20,000 x 20,000 pixels (only the header is ever read)."""
    from tests.test_data_modes import png_file

    folder = images(tmp / "train")
    data = bytearray(png_file(np.zeros((1, 1), np.uint8), 0))
    data[16:24] = (20000).to_bytes(4, "big") * 2  # width and height in IHDR
    import zlib

    data[29:33] = (zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF).to_bytes(4, "big")
    (folder / "huge.png").write_bytes(bytes(data))
    return folder


def _with_entry(name: str, make):
    def folder(tmp: Path) -> Path:
        train = images(tmp / "train")
        make(train / name)
        return train

    return folder


def _listing_missing(tmp: Path) -> Path:
    folder = images(tmp / "train")
    (tmp / "list.txt").write_text("0.png\n1.png\n2.png\n3.png\ngone.png\n")
    return folder


def _binary_config(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_bytes(bytes(range(256)) * 8)
    return ["train", str(tmp / "c.yaml"), "--out", str(tmp / "run")]


def _yaml_text(text: str):
    def make(tmp: Path) -> list[str]:
        (tmp / "c.yaml").write_text(text)
        return ["train", str(tmp / "c.yaml"), "--out", str(tmp / "run")]

    return make


def _plugin(source: str):
    def make(tmp: Path) -> list[str]:
        (tmp / "plug.py").write_text(source)
        return ["--plugin", str(tmp / "plug.py"), "list"]

    return make


def _file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("x")
    return tmp / "a_file"


BAD_INPUT = {
    "--out is a file": (
        lambda tmp: [*_config(lambda c, t: None)(tmp)[:2], "--out", str(_file(tmp))],
        "is a file, not a folder",
    ),
    "--out under a file": (
        lambda tmp: [*_config(lambda c, t: None)(tmp)[:2], "--out", str(_file(tmp) / "run")],
        "is a file",
    ),
    "--device cuda:x": (
        lambda tmp: [*_config(lambda c, t: None)(tmp), "--device", "cuda:x"],
        "--device 'cuda:x' is not a device name",
    ),
    "--device tpu": (
        lambda tmp: [*_config(lambda c, t: None)(tmp), "--device", "tpu"],
        "is not a device name",
    ),
    "--device mps": (
        lambda tmp: [*_config(lambda c, t: None)(tmp), "--device", "mps"],
        "vqbench runs on cpu or cuda",
    ),
    "a plugin that raises": (
        _plugin("raise RuntimeError('boom')\n"),
        "raised while being imported (RuntimeError: boom at plug.py line 1)",
    ),
    "a plugin with a syntax error": (_plugin("def f(:\n"), "has a syntax error at plug.py line 1"),
    "a plugin that exits": (_plugin("import sys\nsys.exit(3)\n"), "called sys.exit(3)"),
    "a binary config": (_binary_config, "not a text file"),
    "a key given twice": (
        _yaml_text("optim:\n  lr: 0.001\n  lr: 0.01\n"),
        "the key 'lr' is given twice",
    ),
    "an unknown model override": (
        _config(lambda c, t: c["model"]["overrides"].update(chanels=8)),
        "model.overrides: unknown key 'chanels'",
    ),
    "a z_channels override (the quantizer's dim)": (
        _config(lambda c, t: c["model"]["overrides"].update(z_channels=8)),
        "set quantizer.params.dim instead",
    ),
    "an empty ch_mult": (
        _config(lambda c, t: c["model"]["overrides"].update(ch_mult=[])),
        "model.overrides.ch_mult=[] is invalid",
    ),
    "a width GroupNorm cannot split": (
        _config(lambda c, t: c["model"]["overrides"].update(ch=48)),
        "gives 48 channels",
    ),
    "lr: .inf": (_config(lambda c, t: c["optim"].update(lr=float("inf"))), "optim.lr=inf"),
    "an Adam beta of 1.5": (
        _config(lambda c, t: c["optim"].update(betas=[1.5, 0.9])),
        "optim.betas.0=1.5 is invalid",
    ),
    "a quantizer beta of nan": (
        _config(lambda c, t: c["quantizer"]["params"].update(beta=float("nan"))),
        "simvq.beta=nan is invalid: Input should be a finite number",
    ),
    "a resolution the model cannot downsample": (
        _config(
            lambda c, t: (
                c["data"].update(resolution=34),
                c["model"]["overrides"].update(ch_mult=[1, 2, 2]),
                c["loss"].update(gan_weight=0),
            )
        ),
        "data.resolution=34 is not a positive multiple of the model's downsampling factor 4",
    ),
    "a VQGAN-LC codebook larger than its features": (
        lambda tmp: _config(
            lambda c, t: (
                c["quantizer"].update(name="vqgan_lc"),
                c["quantizer"]["params"].update(
                    codebook_size=100_000, dim=16, lookup_dim=4, patch_size=2
                ),
            )
        )(tmp),
        "k-means needs at least as many features as codes",
    ),
    "a .jpg that is text": (_with_data(_text_jpg), "notes.jpg' is not an image Pillow can read"),
    "a huge image": (_with_data(_huge_png), "huge.png' is too large"),
    "an empty .png": (
        _with_data(_with_entry("empty.png", lambda p: p.write_bytes(b""))),
        "empty.png' is empty (0 bytes)",
    ),
    "a broken symbolic link": (
        _with_data(_with_entry("gone.png", lambda p: p.symlink_to(p.with_name("nowhere.png")))),
        "gone.png' is a broken symbolic link",
    ),
    "a named pipe called .png": (
        _with_data(_with_entry("pipe.png", lambda p: os.mkfifo(p))),
        "pipe.png' is not a regular file",
    ),
    "a file list naming a missing file": (
        lambda tmp: _with_data(_listing_missing, file_list=str(tmp / "list.txt"))(tmp),
        "gone.png' does not exist; remove it from file list",
    ),
    "data.root is a file": (
        _config(
            lambda c, t: c["data"].update(
                kind="imagefolder", root=str(_file(t)), val_root=str(_file(t))
            )
        ),
        "is a file, not a folder",
    ),
    "validation images that are training images": (
        _with_data(lambda tmp: tmp / "val"),
        "8 of the 8 validation images are also training images",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    make, message = BAD_INPUT[case]
    argv = make(tmp_path)
    before = snapshot(tmp_path)
    assert main(argv) == 2
    assert message in one_line_error(capsys)
    assert snapshot(tmp_path) == before  # not a byte written (no run folder, no .lock)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(tmp_path, capsys):
    argv = _config(lambda c, t: None)(tmp_path)
    assert main([*argv, "--device", "cuda"]) == 2
    assert "this machine has no CUDA device" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def read_only_run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`vqbench *args` with `folder` read-only: a private read-only bind mount when root
    (root ignores permission bits), else the permission bits."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return run_cli(*args)
        finally:
            folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to make a read-only folder as root")
    command = [sys.executable, "-m", "vqbench", *args]
    script = (
        f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"'
    )
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        env=env,
    )
    if "mount" in result.stderr and "vqbench" not in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    return result


@pytest.mark.slow
def test_a_read_only_output_folder(tmp_path):
    config = write_config(tmp_path / "c.yaml", small_config("simvq", steps=2))
    out = tmp_path / "ro"
    out.mkdir()
    for target in (out, out / "run"):
        result = read_only_run(out, "train", str(config), "--out", str(target))
        assert result.returncode == 2, result.stderr
        assert "cannot be written" in result.stderr and "read-only" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(out.iterdir()) == []


def test_a_garbage_status_file(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config("simvq", steps=1))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-eval"]) == 0
    (run / "status.json").write_bytes(b"\x00\xffgarbage{")
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(["train", str(config), "--out", str(run)]) == 2
    assert "status.json' is not valid JSON" in one_line_error(capsys)
    assert snapshot(tmp_path) == before
    # --resume rewrites it (the fingerprint says whose run it is).
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-eval"]) == 0
    assert json.loads((run / "status.json").read_text())["state"] == "trained"


@pytest.mark.parametrize(
    "edit, argv, message",
    [
        (lambda s: s.update(seeds=0), [], "seeds=0 is invalid: give a list of seeds"),
        (lambda s: s.update(seeds=[]), [], "seeds=[] is invalid"),
        (lambda s: s.update(seeds=[0, 0]), [], "a seed appears twice"),
        (lambda s: None, ["--seeds", "0"], "--seeds 0: give at least 1"),
        (lambda s: s.update(suite="../escape"), [], "suite name '../escape' must be"),
        (lambda s: s["runs"][0].update(name="../../x"), [], "run name '../../x' must be"),
        (lambda s: s["runs"][0].update(name="a/b"), [], "run name 'a/b' must be"),
        (lambda s: s["runs"][0].update(name=".."), [], "run name '..' must be"),
    ],
)
def test_bad_suites(tmp_path, capsys, edit, argv, message):
    config = small_config("simvq")
    spec = {
        "suite": "mini",
        "shared": {k: v for k, v in config.items() if k not in ("name", "quantizer")},
        "runs": [{"name": "simvq", "quantizer": config["quantizer"]}],
    }
    edit(spec)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = snapshot(tmp_path)
    out = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert main(["run", str(path), *out, *argv]) == 2
    assert message in one_line_error(capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "TMP/escape", "..", "a/./b"])
def test_a_run_name_cannot_leave_the_output_folder(tmp_path, capsys, monkeypatch, name):
    name = name.replace("TMP", str(tmp_path))  # an absolute path (inside this test's folder)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    config = small_config("simvq", steps=2)
    config["name"] = name
    path = write_config(tmp_path / "work" / "c.yaml", config)
    before = snapshot(tmp_path)
    assert main(["train", str(path)]) == 2  # the default --out is runs/<name>
    assert f"name {name!r} must be" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


# ---- data read wrongly ---------------------------------------------------------------------------
def test_a_damaged_image_with_loader_workers_is_one_line(tmp_path, capsys):
    """Pixel data damaged past a valid header is found when read, in a worker process: one
    line naming the file, and the run stays resumable."""
    train = images(tmp_path / "train", count=4, size=64)
    data = (train / "2.png").read_bytes()
    (train / "2.png").write_bytes(data[: len(data) // 2])
    config = image_config(train, images(tmp_path / "val"), workers=2)
    config["train"].update(batch_size=4, steps=1)
    path = write_config(tmp_path / "c.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-eval"]) == 2
    assert "2.png' cannot be decoded (" in one_line_error(capsys)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "running"


def test_symlinked_class_folders_are_listed_and_a_link_loop_ends(tmp_path):
    from vqbench.data import ImageFolder

    real = images(tmp_path / "real" / "n01", count=3)
    root = images(tmp_path / "root" / "n00", count=2).parent
    (root / "n01").symlink_to(real, target_is_directory=True)
    (root / "n00" / "loop").symlink_to(root, target_is_directory=True)
    listed = ImageFolder(root, 32, train=False).paths
    assert [p.relative_to(root).as_posix() for p in listed] == [
        "n00/0.png",
        "n00/1.png",
        "n01/0.png",
        "n01/1.png",
        "n01/2.png",
    ]


# ---- runs that can be lost or silently wrong ------------------------------------------------
def test_a_second_process_training_into_the_folder_is_refused(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config("simvq", steps=6))
    run, paused = tmp_path / "run", tmp_path / "paused"
    env = {
        **os.environ,
        "VQBENCH_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "VQBENCH_PAUSE_AT": "metrics.jsonl",
        "VQBENCH_PAUSED": str(paused),
    }
    first = subprocess.Popen(
        [sys.executable, "-m", "vqbench", "--plugin", FAULTS, "train", str(config)]
        + ["--out", str(run), "--no-eval"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):
            if paused.exists() or first.poll() is not None:
                break
            __import__("time").sleep(0.1)
        assert paused.exists(), "the first process did not reach its first log record"
        before = snapshot(run)
        for extra in (["--resume"], ["--force"]):
            assert main(["train", str(config), "--out", str(run), "--no-eval", *extra]) == 2
            line = one_line_error(capsys)
            assert f"is in use by pid {first.pid} on " in line, line
        assert snapshot(run) == before
    finally:
        first.kill()
        first.wait()
    # The kernel frees the lock of a killed process: the run resumes.
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-eval"]) == 0


def flip_bytes(path: Path, offset_from_end: int = 64, count: int = 8) -> None:
    """Damage tensor data in place (same size: not a truncation)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - offset_from_end, len(data) - offset_from_end + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_detected_and_resume_falls_back(tmp_path, capsys):
    config = small_config("simvq", steps=4, train={"checkpoint_every": 2})
    path = write_config(tmp_path / "c.yaml", config)
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--no-eval"]) == 0
    # (cloned: safetensors maps the file, whose bytes are about to be flipped in place)
    expected = {
        which: {k: v.clone() for k, v in final_weights(run, which).items()}
        for which in ("model", "ema")
    }
    newest = run / "checkpoints" / "step-00000004"
    flip_bytes(newest / "model.safetensors")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert "model.safetensors does not match its checksum" in one_line_error(capsys)
    assert main(["train", str(path), "--out", str(run), "--resume", "--no-eval"]) == 0
    out = capsys.readouterr().out
    assert "skipping checkpoint step-00000004" in out and "does not match its checksum" in out
    assert "resuming from step-00000002" in out
    for which, weights in expected.items():
        again = final_weights(run, which)
        assert all(torch.equal(weights[k], again[k]) for k in weights), which
    # state.pt is checked too.
    flip_bytes(newest / "state.pt", offset_from_end=400)
    assert main(["eval", str(run)]) == 2
    assert "state.pt does not match its checksum" in one_line_error(capsys)


def test_a_checkpoint_of_another_config_is_refused(tmp_path, capsys):
    ours = write_config(tmp_path / "a.yaml", small_config("simvq", steps=1))
    theirs = write_config(tmp_path / "b.yaml", small_config("simvq", steps=1, optim={"lr": 2e-3}))
    for name, config in (("a", ours), ("b", theirs)):
        assert main(["train", str(config), "--out", str(tmp_path / name), "--no-eval"]) == 0
    shutil.rmtree(tmp_path / "a" / "checkpoints")
    shutil.copytree(tmp_path / "b" / "checkpoints", tmp_path / "a" / "checkpoints")
    capsys.readouterr()
    before = snapshot(tmp_path / "a")
    assert main(["train", str(ours), "--out", str(tmp_path / "a"), "--resume"]) == 2
    assert "was written by another config" in one_line_error(capsys)
    assert snapshot(tmp_path / "a") == before


SHAPE_PLUGIN = """
import os
import torch
from vqbench import register_quantizer
from vqbench.quantizer import ExplicitCodebookQuantizer

@register_quantizer("sized_vq")
class SizedVQ(ExplicitCodebookQuantizer):
    def __init__(self, **params):
        params.setdefault("codebook_size", int(os.environ["SIZED_VQ_CODES"]))
        super().__init__(**params)
        self.codes = torch.nn.Parameter(torch.randn(self.codebook_size, self.dim))

    def codebook(self):
        return self.codes
"""


def test_a_checkpoint_with_other_shapes_is_one_line(tmp_path, capsys, monkeypatch, clean_registry):
    """Same config, same fingerprint, but the plugin's default codebook size changed."""
    (tmp_path / "sized_vq.py").write_text(SHAPE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sized_vq", raising=False)
    config = small_config("simvq", steps=1)
    config["plugins"] = ["sized_vq"]
    config["quantizer"] = {"name": "sized_vq", "params": {"dim": 16}}
    path = write_config(tmp_path / "c.yaml", config)
    run = str(tmp_path / "run")
    monkeypatch.setenv("SIZED_VQ_CODES", "64")
    assert main(["train", str(path), "--out", run, "--no-eval"]) == 0
    monkeypatch.setenv("SIZED_VQ_CODES", "32")
    capsys.readouterr()
    for args in (["train", str(path), "--out", run, "--resume"], ["eval", run]):
        assert main(args) == 2
        assert "size mismatch for quantizer." in one_line_error(capsys)
    sys.modules.pop("sized_vq", None)


def test_a_run_folder_entry_of_the_wrong_kind(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config("simvq", steps=2))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-eval"]) == 0
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 2
    assert "checkpoints' is not a folder" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


def test_resuming_on_other_training_images_is_refused(tmp_path, capsys):
    train, val = images(tmp_path / "train"), images(tmp_path / "val", count=4)
    config = write_config(tmp_path / "c.yaml", image_config(train, val, workers=0))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-eval"]) == 0
    (train / "7.png").rename(tmp_path / "7.png")  # one image fewer: another dataset
    capsys.readouterr()
    before = snapshot(run)
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-eval"]) == 2
    assert "the training images changed since this run started (8 images then, 7 now" in (
        one_line_error(capsys)
    )
    assert snapshot(run) == before
    (tmp_path / "7.png").rename(train / "7.png")
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-eval"]) == 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path):
    """The run folder on a 1 MB tmpfs (a private mount namespace): the first checkpoint does
    not fit; with room made, --resume ends where an uninterrupted run ends."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    config = small_config("simvq", steps=4, train={"checkpoint_every": 2})
    path = write_config(tmp_path / "c.yaml", config)
    reference = run_cli("train", str(path), "--out", str(tmp_path / "reference"), "--no-eval")
    assert reference.returncode == 0, reference.stderr
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    train = f'"{sys.executable}" -m vqbench train "{path}" --out "{disk}/run" --no-eval'
    script = (
        f'mount -t tmpfs -o size=1m tmpfs "{disk}" || exit 99\n'
        f"{train} 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc\n"
        f'ls -a "{disk}/run/checkpoints" > {tmp_path}/full.ls\n'
        f'mount -o remount,size=256m "{disk}"\n'
        f"{train} --resume 2> {tmp_path}/resumed.err; echo $? > {tmp_path}/resumed.rc\n"
        f'cp -r "{disk}/run" "{kept}"\n'
    )
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True)
    if done.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    full = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "2", full
    errors = [line for line in full.splitlines() if line.startswith("vqbench: error")]
    assert len(errors) == 1 and "Traceback" not in full, full
    assert "No space left on device" in errors[0] and "--resume" in errors[0]
    assert (tmp_path / "full.ls").read_text().split() == [".", ".."]  # no half checkpoint
    assert (tmp_path / "resumed.rc").read_text().strip() == "0", (
        tmp_path / "resumed.err"
    ).read_text()
    for which in ("model", "ema"):
        ours, theirs = final_weights(kept, which), final_weights(tmp_path / "reference", which)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), which


def test_a_damaged_latest_pointer_falls_back_to_the_newest_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config("simvq", steps=2))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-eval"]) == 0
    (run / "checkpoints" / "latest").write_bytes(b"\xff\x00../../elsewhere")
    assert main(["eval", str(run)]) == 0
    assert json.loads((run / "eval.json").read_text())["checkpoint"] == "step-00000002"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:  # argparse: the two cannot go together
        main(["train", str(config), "--out", str(run), "--resume", "--force"])
    assert exited.value.code == 2
    assert "argument --force: not allowed with argument --resume" in capsys.readouterr().err
