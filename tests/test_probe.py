"""The downstream probe end to end: `vqbench probe` on tiny trained runs (a plain and a
composite quantizer), a suite with a `probe:` section, re-runs that skip, bad settings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from tests.engine_helpers import small_config, write_config
from tests.metrics.test_pretrained_metrics import Uint8Images, random_inception_weights
from vqbench.build import load_trained
from vqbench.cli import main
from vqbench.config import ProbeConfig
from vqbench.data import EmbeddedPhotos, build_split, to_uint8
from vqbench.distributed import World
from vqbench.metrics import SampleFID
from vqbench.pretrained import INCEPTION_FILE
from vqbench.probe import (
    TokenSet,
    build_prior,
    class_indices,
    decode,
    prepare,
    sample_and_measure,
)

#: A prior small enough for a test: one layer, a handful of steps and samples.
TINY_PROBE = {
    "layers": 1,
    "width": 16,
    "heads": 2,
    "steps": 6,
    "batch_size": 4,
    "warmup_steps": 2,
    "samples": 6,
    "eval_batch_size": 4,
    "figure_samples": 4,
    "seeds": [0, 1],
}

PAIR_PLUGIN = '''
import torch
from torch import nn

from vqbench import register_quantizer
from vqbench.quantizer import Quantizer, QuantizerOutput, QuantizerParams


class PairParams(QuantizerParams):
    dim: int = 16
    size: int = 6


@register_quantizer("pair_vq")
class PairVQ(Quantizer):
    """A product quantizer: each half of a token has its own codebook; indices (B, H, W, 2)."""

    Params = PairParams
    explicit_codebook = False

    def __init__(self, **params):
        super().__init__(**params)
        self.books = nn.Parameter(torch.randn(2, self.params.size, self.params.dim // 2))

    @property
    def codebook_size(self):
        return self.params.size**2

    def index_sizes(self):
        return [self.params.size, self.params.size]

    def quantize_tokens(self, z):
        halves = z.view(z.shape[0], 2, -1).transpose(0, 1)
        indices = torch.cdist(halves, self.books).argmin(-1).t()
        q = self.decode_tokens(indices)
        loss = ((q - z.detach()) ** 2).mean() + 0.25 * ((q.detach() - z) ** 2).mean()
        return QuantizerOutput(z + (q - z).detach(), indices, loss, {})

    def decode_tokens(self, indices):
        return torch.cat([self.books[0][indices[:, 0]], self.books[1][indices[:, 1]]], dim=1)

    def forward(self, z):
        b, _, h, w = z.shape
        out = self.quantize_tokens(z.permute(0, 2, 3, 1).reshape(-1, self.dim).float())
        z_q = out.z_q.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)
        return QuantizerOutput(z_q, out.indices.reshape(b, h, w, 2), out.loss, out.stats)

    def decode_indices(self, indices):
        b, h, w, _ = indices.shape
        tokens = self.decode_tokens(indices.reshape(-1, 2))
        return tokens.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)
'''


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread (no OpenMP hand-offs on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def probe_config(config: dict) -> dict:
    """A tiny run whose token grid is 8 x 8 (the tiny preset's f = 4 at 32 x 32)."""
    config["model"] = {"preset": "tiny", "overrides": {"ch": 16}}
    return config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    config = write_config(folder / "run.yaml", probe_config(small_config("vanilla", steps=4)))
    os.environ["VQBENCH_OFFLINE"] = "1"
    assert main(["train", str(config), "--out", str(folder / "run")]) == 0
    (folder / "probe.yaml").write_text(yaml.safe_dump(TINY_PROBE))
    return folder


def read(path):
    return json.loads(path.read_text())


def test_vqbench_probe_writes_every_seed_then_skips_and_adds_seeds(trained_run, capsys):
    run, settings = trained_run / "run", trained_run / "probe.yaml"
    assert main(["probe", str(run), "--config", str(settings)]) == 0
    result = read(run / "probe.json")
    assert [s["seed"] for s in result["seeds"]] == [0, 1]
    assert result["index_sizes"] == [64] and result["digits"] == [64]
    assert result["tokens_per_image"] == 64 and result["token_grid"] == [8, 8]
    assert result["conditioning"] == "unconditional (the data has no class labels)"
    assert result["weights"] == "model_ema" and result["val_images"] == 8
    for seed in result["seeds"]:
        assert 0 < seed["bits_per_token"] < 2 * math.log2(64)
        assert seed["bits_per_image"] == pytest.approx(64 * seed["bits_per_token"])
        assert 0 < seed["sample_usage"] <= 1 and math.isfinite(seed["train_bits_per_token"])
        assert seed["gfid"].startswith("n/a (Inception")  # no weights here, said so
    assert result["seeds"][0]["bits_per_token"] != result["seeds"][1]["bits_per_token"]
    assert (run / "probe-samples.png").is_file()
    assert "bits_per_token" in capsys.readouterr().out
    # The same settings again: nothing is redone.
    stamp = (run / "probe.json").stat().st_mtime_ns
    assert main(["probe", str(run), "--config", str(settings)]) == 0
    assert "probed earlier" in capsys.readouterr().out
    assert (run / "probe.json").stat().st_mtime_ns == stamp
    # One more seed: the finished ones are kept as they are.
    assert main(["probe", str(run), "--config", str(settings), "--seeds", "0", "1", "2"]) == 0
    more = read(run / "probe.json")
    assert [s["seed"] for s in more["seeds"]] == [0, 1, 2]
    assert more["seeds"][:2] == result["seeds"]


def test_a_probe_with_other_settings_starts_again(trained_run):
    run = trained_run / "run"
    settings = trained_run / "other.yaml"
    settings.write_text(yaml.safe_dump({**TINY_PROBE, "seeds": [0], "steps": 4}))
    assert main(["probe", str(run), "--config", str(settings)]) == 0
    result = read(run / "probe.json")
    assert result["settings"]["steps"] == 4 and [s["seed"] for s in result["seeds"]] == [0]


def test_bad_probe_settings_fail_in_one_line(trained_run, capsys):
    settings = trained_run / "bad.yaml"
    settings.write_text(yaml.safe_dump({**TINY_PROBE, "stpes": 3}))
    assert main(["probe", str(trained_run / "run"), "--config", str(settings)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'stpes'; did you mean 'steps'" in err and "\n" not in err
    assert main(["probe", str(trained_run / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_composite_quantizer_is_probed_through_its_index_sizes(tmp_path, monkeypatch):
    (tmp_path / "pair_plugin.py").write_text(PAIR_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = probe_config(small_config("vanilla", steps=2))
    config.update(plugins=["pair_plugin"], quantizer={"name": "pair_vq", "params": {}})
    path = write_config(tmp_path / "run.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    settings = tmp_path / "probe.yaml"
    settings.write_text(yaml.safe_dump({**TINY_PROBE, "seeds": [0], "softmax_limit": 4}))
    assert main(["probe", str(tmp_path / "run"), "--config", str(settings)]) == 0
    result = read(tmp_path / "run" / "probe.json")
    assert result["index_sizes"] == [6, 6] and result["digits"] == [3, 2, 3, 2]
    assert result["uniform_bits_per_token"] == pytest.approx(2 * math.log2(6))
    assert len(result["seeds"][0]["sample_usage_per_component"]) == 2


def image_folders(root, classes: dict[str, int], seed: int):
    """`root/<class>/<i>.png`: crops of the embedded photos, `n` per class."""
    from PIL import Image

    photos = EmbeddedPhotos(32, train=True, size=sum(classes.values()), seed=seed)
    i = 0
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for k in range(n):
            image = to_uint8(photos[i]).permute(1, 2, 0).numpy()
            Image.fromarray(image).save(root / name / f"{k}.png")
            i += 1
    return str(root)


def test_class_subfolders_give_a_class_conditional_prior(tmp_path):
    data = {
        "kind": "imagefolder",
        "root": image_folders(tmp_path / "train", {"cats": 6, "dogs": 6}, 0),
        "val_root": image_folders(tmp_path / "val", {"cats": 2, "dogs": 2}, 1),
        "resolution": 32,
    }
    config = probe_config(small_config("vanilla", steps=2))
    config["data"] = data
    path = write_config(tmp_path / "run.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    settings = tmp_path / "probe.yaml"
    settings.write_text(yaml.safe_dump({**TINY_PROBE, "seeds": [0]}))
    assert main(["probe", str(tmp_path / "run"), "--config", str(settings)]) == 0
    result = read(tmp_path / "run" / "probe.json")
    assert result["conditioning"] == "class-conditional (2 classes)"
    assert result["train_images"] == 12 and result["val_images"] == 4


def test_which_labels_make_a_prior_conditional():
    def tokens(labels):
        return TokenSet(torch.zeros(len(labels or "ab"), 4, 1, dtype=torch.int32), (2, 2), labels)

    train, val = tokens(["a", "b", "a"]), tokens(["b", "a"])
    train_ids, val_ids, why = class_indices(train, val, True)
    assert train_ids.tolist() == [0, 1, 0] and val_ids.tolist() == [1, 0]
    assert why == "class-conditional (2 classes)"
    assert class_indices(train, val, False)[2] == "unconditional (probe.class_conditional is off)"
    assert class_indices(train, tokens(["c", "a"]), True)[0] is None  # an unseen class
    assert class_indices(tokens(["a", "a"]), tokens(["a"]), True)[2].endswith("(one class folder)")
    assert class_indices(tokens(None), val, True)[2].endswith("(the data has no class labels)")


def test_gfid_equals_torch_fidelity_on_the_same_samples(trained_run, tmp_path, monkeypatch):
    import torch_fidelity

    weights = tmp_path / INCEPTION_FILE
    random_inception_weights(weights)
    monkeypatch.setenv("VQBENCH_INCEPTION_WEIGHTS", str(weights))
    cpu = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
    config, model, _, _ = load_trained(trained_run / "run")
    probe = ProbeConfig(**{**TINY_PROBE, "samples": 4})  # Inception is slow on a CPU
    parts = prepare(model, config, probe, cpu)
    assert isinstance(parts.fid, SampleFID)
    torch.manual_seed(0)
    prior = build_prior(parts.layout, 64, 0, probe).eval()  # untrained: any prior will do
    first, _ = sample_and_measure(prior, model, parts.val, None, parts.fid, probe, cpu, 0)
    again, _ = sample_and_measure(prior, model, parts.val, None, parts.fid, probe, cpu, 0)
    assert again["gfid"] == first["gfid"]  # the fake side starts afresh for every seed
    # The same samples by hand: batch b of seed s comes from a generator seeded s * 1000003 + b.
    samples = []
    for b, start in enumerate(range(0, probe.samples, probe.eval_batch_size)):
        n = min(probe.eval_batch_size, probe.samples - start)
        digits = prior.sample(n, generator=torch.Generator().manual_seed(b))
        samples.append(decode(model, parts.layout, digits, (8, 8)))
    val = build_split(config.data, train=False, seed=config.seed)
    reference = torch_fidelity.calculate_metrics(
        input1=Uint8Images(torch.cat(samples)),
        input2=Uint8Images(torch.stack([val[i] for i in range(len(val))])),
        fid=True,
        cuda=False,
        batch_size=8,
        verbose=False,
        feature_extractor_weights_path=str(weights),
        save_cpu_ram=True,
    )["frechet_inception_distance"]
    assert first["gfid"] == pytest.approx(reference, rel=1e-3) and first["gfid"] > 0


def mini_suite(tmp_path, probe) -> str:
    base = probe_config(small_config("vanilla", steps=3))
    spec = {
        "suite": "mini",
        "shared": {k: base[k] for k in ("data", "model", "loss", "optim", "train", "eval")},
        "runs": [
            {
                "name": "vanilla",
                "quantizer": {"name": "vanilla", "params": base["quantizer"]["params"]},
            },
            {"name": "fsq", "quantizer": {"name": "fsq", "params": {"levels": [4, 4], "dim": 16}}},
        ],
        "probe": probe,
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_a_suite_probes_every_run_reports_the_columns_and_skips_on_rerun(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["run", mini_suite(tmp_path, TINY_PROBE), "--out", str(runs), "--results", str(results)]
    assert main(args) == 0
    report = (results / "mini.md").read_text()
    data = read(results / "mini.json")
    for column in ("| Bits/token", "| Bits/image", "| gFID", "| Sample usage"):
        assert column in report
    assert "- Probe: GPT-2 1 layers x 16 wide" in report and "Probe: the same small" in report
    assert "Unavailable — gfid: n/a (" in report
    for row in data["rows"]:
        assert row["metrics"]["bits_per_token"]["n"] == 2  # the prior's two seeds
        assert row["metrics"]["bits_per_token"]["std"] > 0
    assert "mini-probe-samples.png" in data["figures"]
    assert (results / "mini-probe-samples.png").is_file()
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("probed earlier, skipped") == 2 and "probing" not in out


def test_a_bad_probe_section_fails_before_anything_runs(tmp_path, capsys):
    suite = mini_suite(tmp_path, {**TINY_PROBE, "steps": 0})
    assert main(["run", suite, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "mini.yaml: probe.steps=0 is invalid" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_gloo_processes_probe_like_one(trained_run):
    """DDP: the same global batches on two processes give the same prior as on one."""
    run = trained_run / "run"
    settings = trained_run / "ddp.yaml"
    settings.write_text(yaml.safe_dump({**TINY_PROBE, "seeds": [0], "steps": 8}))
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "vqbench", "probe", str(run), "--config", str(settings)]
    one = subprocess.run([*base, "--force"], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    single = read(run / "probe.json")["seeds"][0]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    two = subprocess.run(
        [*launcher, "--master_port", "29531", *base[1:], "--force", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    double = read(run / "probe.json")["seeds"][0]
    for key in ("bits_per_token", "train_bits_per_token"):
        assert double[key] == pytest.approx(single[key], rel=1e-4), key
