"""`vqbench eval --tokenizer NAME --checkpoint FILE`: a published tokenizer through the metric
loop of trained runs, probed as they are, with one-line errors (exit 2) for what does not fit.

The tokenizer is test-made (`tests/published_helpers.py`: average pooling, nearest colours of
fixed palettes, nearest-neighbour upsampling), so its PSNR and codebook usage are computed here
by brute force from the images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

from tests.engine_helpers import run_cli, small_config
from tests.published_helpers import NAME, palettes, write_checkpoint
from vqbench.build import build_model
from vqbench.cli import main
from vqbench.config import DataConfig, parse_run_config
from vqbench.data import build_split
from vqbench.distributed import World
from vqbench.errors import VQBenchError
from vqbench.evaluate import evaluate_split
from vqbench.published_run import published_config, with_protocol

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
DATA = {"kind": "embedded", "resolution": 16, "train_size": 32, "val_size": 12}
EVAL = {"batch_size": 5, "metrics": ["usage", "psnr", "ssim"]}
TINY_PROBE = {
    "layers": 1, "width": 16, "heads": 2, "steps": 4, "batch_size": 4, "warmup_steps": 1,
    "samples": 4, "eval_batch_size": 4, "figure_samples": 2, "gfid": False,
}  # fmt: skip


@pytest.fixture
def settings(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"data": DATA, "eval": EVAL}))
    return path


def evaluate(tmp_path, settings, *extra: str, stages: int = 1, out: str = "out") -> int:
    ckpt = write_checkpoint(tmp_path / "pool.pt", stages=stages)
    options = ["--option", f"stages={stages}"] if stages > 1 else []
    return main(
        ["eval", "--tokenizer", NAME, "--checkpoint", str(ckpt), "--config", str(settings),
         "--out", str(tmp_path / out), "--device", "cpu", *options, *extra]
    )  # fmt: skip


def brute_force(stages: int = 1):
    """Per-image PSNR on the uint8 grid and each stage's used colours, computed here."""
    val = build_split(DataConfig(**DATA), train=False)
    x = torch.stack([val[i] for i in range(len(val))]).double()
    pooled = x.reshape(len(val), 3, 4, 4, 4, 4).mean((3, 5)).permute(0, 2, 3, 1)  # (N, 4, 4, 3)
    codes, residual, used = palettes(8, stages).double(), pooled, []
    rec = torch.zeros_like(pooled)
    for s in range(stages):
        d = ((residual[..., None, :] - codes[s]) ** 2).sum(-1)
        index = d.argmin(-1)
        used.append(len(set(index.flatten().tolist())))
        rec, residual = rec + codes[s][index], residual - codes[s][index]
    rec = rec.permute(0, 3, 1, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)

    def uint8(t):
        return np.round((t.clamp(-1, 1).numpy() + 1) / 2 * 255)

    mse = ((uint8(x) / 255 - uint8(rec) / 255) ** 2).reshape(len(val), -1).mean(1)
    return float(np.mean(10 * np.log10(1 / mse))), used


def test_eval_json_has_a_trained_runs_keys_and_the_brute_force_psnr(tmp_path, settings):
    assert evaluate(tmp_path, settings) == 0
    out = tmp_path / "out"
    result = json.loads((out / "eval.json").read_text())
    config = parse_run_config(small_config("vanilla", eval=EVAL), "test")
    trained = set(evaluate_split(build_model(config), config, CPU))
    trained |= {"checkpoint", "split", "weights", "operation"}  # what evaluate_run adds
    published = {"tokenizer", "checkpoint_sha256", "source", "options"}
    assert set(result) == trained | published
    psnr, used = brute_force()
    assert result["psnr"] == pytest.approx(psnr, abs=1e-9)
    assert result["usage"] == used[0] / 8 and result["codebook_size"] == 8
    assert result["images"] == 12 and result["independent_groups"] is None
    sha = hashlib.sha256((tmp_path / "pool.pt").read_bytes()).hexdigest()
    assert result["checkpoint"] == "pool.pt" and result["checkpoint_sha256"] == sha
    assert result["tokenizer"] == NAME and "PoolVQ" in result["source"]
    assert (out / "reconstructions.png").is_file()
    assert json.loads((out / "figures.json").read_text())["weights"] == "released"


def test_two_index_components_report_usage_per_index_and_as_the_product(tmp_path, settings):
    assert evaluate(tmp_path, settings, stages=2) == 0
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    psnr, used = brute_force(stages=2)
    assert result["index_sizes"] == [8, 8] and result["codebook_size"] == 64
    assert result["usage_per_index"] == [u / 8 for u in used]
    assert result["psnr"] == pytest.approx(psnr, abs=1e-9)
    assert 0 < result["product_usage"] <= min(used[0] * used[1], 12 * 16) / 64
    assert result["options"] == {"stages": 2}


def test_the_probe_runs_on_the_published_tokenizers_indices(tmp_path, settings, capsys):
    assert evaluate(tmp_path, settings) == 0
    probe = tmp_path / "probe.yaml"
    probe.write_text(yaml.safe_dump({"probe": TINY_PROBE}))
    out = tmp_path / "out"
    assert main(["probe", str(out), "--config", str(probe), "--device", "cpu"]) == 0
    result = json.loads((out / "probe.json").read_text())
    assert result["index_sizes"] == [8] and result["token_grid"] == [4, 4]
    assert result["weights"] == "released" and result["val_images"] == 12
    assert np.isfinite(result["seeds"][0]["bits_per_token"])
    _, used = brute_force()
    assert result["data_usage"] == used[0] / 8  # the tokens the prior saw are the tokenizer's


def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_key(tmp_path, settings, capsys):
    ckpt = tmp_path / "pool.pt"
    torch.save({"model": {"palettes": torch.zeros(1, 6, 3)}}, ckpt)
    code = main(
        ["eval", "--tokenizer", NAME, "--checkpoint", str(ckpt), "--config", str(settings),
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'palettes' has shape (1, 6, 3) in the file, (1, 8, 3) in the model" in err
    assert not (tmp_path / "out").exists()  # nothing written
    write_checkpoint(ckpt, extra_key=torch.zeros(1))
    code = main(
        ["eval", "--tokenizer", NAME, "--checkpoint", str(ckpt), "--config", str(settings),
         "--out", str(tmp_path / "out2")]
    )  # fmt: skip
    assert code == 2 and "unexpected key 'extra_key'" in capsys.readouterr().err


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, settings):
    ckpt = write_checkpoint(tmp_path / "pool.pt")
    out = tmp_path / "out"
    base = ["--plugin", "tests/published_helpers.py", "eval", "--out", str(out)]
    cases = {
        "unknown tokenizer adapter 'no_such'": ["--tokenizer", "no_such", "--checkpoint",
                                                str(ckpt), "--data", "embedded"],
        "does not exist": ["--tokenizer", NAME, "--checkpoint", str(tmp_path / "x.pt"),
                           "--data", "embedded"],
        "give the validation images": ["--tokenizer", NAME, "--checkpoint", str(ckpt)],
        "is not a folder": ["--tokenizer", NAME, "--checkpoint", str(ckpt), "--data",
                            str(tmp_path / "nowhere")],
        "not a positive multiple": ["--tokenizer", NAME, "--checkpoint", str(ckpt), "--config",
                                    str(settings), "--resolution", "18"],
        "is not KEY=VALUE": ["--tokenizer", NAME, "--checkpoint", str(ckpt), "--data",
                             "embedded", "--option", "stages"],
        "goes with --tokenizer": ["--checkpoint", str(ckpt)],
        "measures 50,000 val images": ["--tokenizer", NAME, "--checkpoint", str(ckpt), "--data",
                                       "embedded", "--resolution", "128", "--protocol",
                                       "simvq128"],
    }  # fmt: skip
    for message, args in cases.items():
        proc = run_cli(*base, *args)
        assert proc.returncode == 2, (message, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()


def test_another_tokenizers_folder_is_not_overwritten_without_force(tmp_path, settings, capsys):
    assert evaluate(tmp_path, settings) == 0
    assert evaluate(tmp_path, settings) == 0  # the same tokenizer: evaluated again
    assert evaluate(tmp_path, settings, stages=2) == 2
    assert "holds another evaluation" in capsys.readouterr().err
    assert evaluate(tmp_path, settings, "--force", stages=2) == 0


def test_image_folders_and_a_probe_that_needs_training_images(tmp_path, capsys):
    from PIL import Image

    generator = np.random.default_rng(0)
    for folder in ("val", "train"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            pixels = generator.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / folder / f"{i}.png")
    ckpt = str(write_checkpoint(tmp_path / "pool.pt"))
    base = ["eval", "--tokenizer", NAME, "--checkpoint", ckpt, "--data", str(tmp_path / "val")]
    assert main([*base, "--out", str(tmp_path / "alone")]) == 0
    result = json.loads((tmp_path / "alone" / "eval.json").read_text())
    assert result["images"] == 3  # at the tokenizer's resolution (16), centre-cropped
    assert main(["probe", str(tmp_path / "alone")]) == 2
    assert "the probe trains its prior on training images" in capsys.readouterr().err
    train = ["--train-data", str(tmp_path / "train"), "--resolution", "8"]
    assert main([*base, *train, "--out", str(tmp_path / "both")]) == 0
    recorded = yaml.safe_load((tmp_path / "both" / "published.yaml").read_text())
    assert (
        recorded["data"]["root"] == str(tmp_path / "train") and recorded["data"]["resolution"] == 8
    )
    assert recorded["checkpoint_sha256"] == result["checkpoint_sha256"]


def test_a_pickled_checkpoint_needs_trust(tmp_path, settings, capsys):
    import argparse

    ckpt = tmp_path / "pickled.ckpt"
    torch.save({"model": {"palettes": palettes()}, "hparams": argparse.Namespace(a=1)}, ckpt)
    args = ["eval", "--tokenizer", NAME, "--checkpoint", str(ckpt), "--config", str(settings)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "pass --trust-checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--out", str(tmp_path / "out"), "--trust-checkpoint"]) == 0
    recorded = yaml.safe_load((tmp_path / "out" / "published.yaml").read_text())
    assert recorded["tokenizer"]["trust"] is True


def test_a_protocol_sets_the_evaluation_and_its_image_size(tmp_path):
    """`--protocol` reaches `eval.protocol`; the protocol's size is the default image size,
    an explicit other size is one line (the protocol fixes it)."""
    assert with_protocol({"eval": {"batch_size": 4}}, "p")["eval"] == {
        "batch_size": 4,
        "protocol": "p",
    }
    assert with_protocol({"eval": {}}, None) == {"eval": {}}
    ckpt = write_checkpoint(tmp_path / "pool.pt")
    config = published_config(NAME, ckpt, data="embedded", protocol="simvq128")
    assert config.data.resolution == 128 and config.eval.protocol == "simvq128"
    assert config.eval.fid_backend == "pytorch-fid"  # what the protocol fixes
    assert published_config(NAME, ckpt, data="embedded").data.resolution == 16  # the adapter's
    with pytest.raises(VQBenchError, match="evaluates at 128x128, data.resolution is 64"):
        published_config(NAME, ckpt, data="embedded", resolution=64, protocol="simvq128")
