"""A researcher's first hour (issue 29), as the user meets it: the README's plugin and suite in a
working directory of their own, a suite run with 2 seeds, eval / probe / report without
`--plugin`, the usual mistakes, and the tokens used from their own code."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_readme import plugin_example, suite_example
from vqbench import Tokenizer, VQBenchError

#: The README's suite, made small enough for a test (the settings a user would not change are
#: the README's own).
SMALL = {
    "data": {"kind": "embedded", "resolution": 32, "train_size": 16, "val_size": 8},
    "train": {"steps": 2, "batch_size": 4, "ema_decay": 0.95, "log_every": 1},
    "eval": {"batch_size": 8, "metrics": ["usage", "psnr", "ssim"]},
}
TINY_PROBE = {
    "layers": 1,
    "width": 16,
    "heads": 2,
    "steps": 2,
    "batch_size": 4,
    "warmup_steps": 1,
    "samples": 4,
    "eval_batch_size": 4,
    "figure_samples": 4,
    "seeds": [0, 1],
}


def vqbench(*args: str, cwd: Path, console_script: bool = False) -> subprocess.CompletedProcess:
    """The command as a user types it (stderr is a pipe, not a terminal)."""
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = (
        [str(Path(sys.executable).with_name("vqbench"))]
        if console_script
        else [sys.executable, "-m", "vqbench"]
    )
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqbench: error: "), result.stderr
    return lines[0]


def small_suite(with_plugins_key: bool) -> dict:
    suite = yaml.safe_load(suite_example())
    suite["shared"].update(copy.deepcopy(SMALL))
    suite["probe"] = dict(TINY_PROBE)
    if not with_plugins_key:
        suite.pop("plugins")
    return suite


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The user's folder after `vqbench run mine.yaml --plugin my_vq.py` (2 seeds, a probe)."""
    home = tmp_path_factory.mktemp("home")
    (home / "my_vq.py").write_text(plugin_example())
    (home / "mine.yaml").write_text(yaml.safe_dump(small_suite(with_plugins_key=False)))
    result = vqbench("run", "mine.yaml", "--plugin", "my_vq.py", cwd=home)
    assert result.returncode == 0, result.stderr
    return home, result


# ---- plugins stay loaded -----------------------------------------------------------------------
def test_plugin_after_the_command_runs_the_suite_and_is_recorded(home):
    folder, _ = home
    recorded = json.loads((folder / "runs/mine/mine-s0/plugins.json").read_text())
    assert recorded == {"plugins": [str(folder / "my_vq.py")]}
    assert json.loads((folder / "runs/mine/plugins.json").read_text()) == recorded
    assert (folder / "results/mine.md").is_file()


def test_without_a_terminal_training_prints_a_line_per_log_step(home):
    _, result = home
    assert "\r" not in result.stderr  # no progress-bar updates
    for seed in (0, 1):
        assert f"vqbench: mine/mine-s{seed} step 1/2: loss " in result.stderr
        assert f"vqbench: mine/mine-s{seed} step 2/2: loss " in result.stderr


def test_eval_probe_and_report_need_no_plugin_again(home):
    folder, _ = home
    assert vqbench("eval", "runs/mine/mine-s0", cwd=folder).returncode == 0
    probe = vqbench("probe", "runs/mine/mine-s1", "--seeds", "0", cwd=folder)
    assert probe.returncode == 0, probe.stderr
    report = vqbench("report", "runs/mine", "--results", "again", cwd=folder)
    assert report.returncode == 0, report.stderr
    assert "Scaled cosine VQ" in (folder / "again/mine.md").read_text()


def test_adding_plugins_to_a_finished_suite_retrains_nothing(home):
    folder, _ = home
    suite = folder / "with-key.yaml"
    suite.write_text(yaml.safe_dump(small_suite(with_plugins_key=True)))
    result = vqbench("run", "with-key.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("finished earlier, skipped") == 6


def test_other_settings_name_the_first_setting_that_differs(home):
    folder, _ = home
    suite = small_suite(with_plugins_key=True)
    suite["shared"]["optim"]["lr"] = 5.0e-4
    (folder / "changed.yaml").write_text(yaml.safe_dump(suite))
    line = one_line_error(vqbench("run", "changed.yaml", cwd=folder))
    assert "holds a run with other settings" in line
    assert "first difference: optim.lr: 0.001 there, 0.0005 here" in line


def test_a_moved_plugin_file_is_named_and_its_new_place_accepted(home):
    folder, _ = home
    (folder / "moved").mkdir(exist_ok=True)
    shutil.move(folder / "my_vq.py", folder / "moved/my_vq.py")
    try:
        line = one_line_error(vqbench("eval", "runs/mine/mine-s0", cwd=folder))
        assert f"plugin file '{folder / 'my_vq.py'}'" in line and "--plugin" in line
        ok = vqbench("eval", "runs/mine/mine-s0", "--plugin", "moved/my_vq.py", cwd=folder)
        assert ok.returncode == 0, ok.stderr
    finally:
        shutil.move(folder / "moved/my_vq.py", folder / "my_vq.py")


def test_unknown_quantizer_suggests_plugin(tmp_path):
    suite = small_suite(with_plugins_key=False)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(suite))
    line = one_line_error(vqbench("run", "mine.yaml", "--dry-run", cwd=tmp_path))
    assert "unknown quantizer 'scaled_cosine_vq'" in line and "--plugin" in line


# ---- the report answers "is mine better?" ------------------------------------------------------
def test_report_names_the_baseline_and_the_ranking_the_seeds_support(home):
    folder, _ = home
    text = (folder / "results/mine.md").read_text()
    assert "SimVQ (baseline)" in text
    assert "Ranking the seeds support (two-SE rule" in text and "Welch" in text
    report = json.loads((folder / "results/mine.json").read_text())
    assert report["baseline"] == "simvq" and "two-SE rule" in report["test"]
    assert {entry["column"] for entry in report["ranking"]} >= {"psnr", "usage"}
    mine = next(r for r in report["rows"] if r["run"] == "mine")
    assert set(mine["vs_baseline"]) >= {"psnr", "usage"}
    # Notes that do not apply are left out: no GAN term, no paper figure, free codebooks.
    assert "discriminator" not in text and "Fig. 10" not in text
    assert "| Group" not in text


def test_probe_cells_from_fewer_seeds_than_asked_say_so(home):
    folder, _ = home
    probe = folder / "runs/mine/vanilla-s0/probe.json"
    saved = probe.read_text()
    data = json.loads(saved)
    data["seeds"] = data["seeds"][:1]  # as if the probe had stopped after its first seed
    probe.write_text(json.dumps(data))
    try:
        assert vqbench("report", "runs/mine", "--results", "partial", cwd=folder).returncode == 0
        row = next(
            line for line in (folder / "partial/mine.md").read_text().splitlines()
            if line.startswith("| VQGAN ")
        )  # fmt: skip
        assert "(n=3 of 4)" in row  # 2 suite seeds x 2 prior seeds asked
    finally:
        probe.write_text(saved)


# ---- small traps -------------------------------------------------------------------------------
def test_a_stopped_run_is_reported_as_interrupted_with_resume_as_the_fix(home):
    folder, _ = home
    run = folder / "runs/mine/simvq-s0"
    status = run / "status.json"
    saved = status.read_text()
    status.write_text(json.dumps({"state": "running", "step": 1}))  # as Ctrl-C leaves it
    try:
        line = one_line_error(
            vqbench("train", str(run / "config.yaml"), "--out", str(run), cwd=folder)
        )
        assert "interrupted" in line and "no process holds its lock" in line
        assert "--resume" in line
    finally:
        status.write_text(saved)


def test_dry_run_checks_every_path_a_run_reads(tmp_path):
    suite = small_suite(with_plugins_key=False)
    suite["runs"] = suite["runs"][:1]
    suite["shared"]["data"] = {
        "kind": "imagefolder",
        "root": str(tmp_path / "imagenett"),  # misspelt
        "val_root": str(tmp_path),
        "resolution": 32,
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    line = one_line_error(vqbench("run", "s.yaml", "--dry-run", cwd=tmp_path))
    assert "data.root of run 'simvq'" in line and "imagenett" in line
    suite["shared"]["data"]["root"] = str(tmp_path)
    suite["shared"]["eval"]["inception_weights"] = "no/such/inception.pth"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    line = one_line_error(vqbench("run", "s.yaml", "--dry-run", cwd=tmp_path))
    assert "eval.inception_weights" in line and "no/such/inception.pth" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing written


def test_a_run_level_setting_says_how_a_run_changes_one(tmp_path):
    suite = small_suite(with_plugins_key=False)
    suite["runs"] = suite["runs"][:2] + [{**suite["runs"][1], "name": "x", "optim": {"lr": 1}}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    line = one_line_error(vqbench("run", "s.yaml", "--dry-run", cwd=tmp_path))
    assert "unknown key 'runs.2.optim'" in line
    assert "'overrides'" in line and "'varies'" in line


# ---- plugins that shadow nothing (issue 28, item 2) --------------------------------------------
def test_a_plugin_file_named_like_a_standard_module_replaces_nothing(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins/json.py").write_text(plugin_example())
    suite = small_suite(with_plugins_key=False)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(suite))
    result = vqbench("run", "mine.yaml", "--dry-run", "--plugin", "plugins/json.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # the fingerprints use the real json
    assert "scaled_cosine_vq(" in result.stdout


@pytest.mark.parametrize("console_script", [True, False], ids=["vqbench", "python -m vqbench"])
def test_the_working_directory_does_not_shadow_installed_packages(tmp_path, console_script):
    (tmp_path / "my_vq.py").write_text(plugin_example())
    (tmp_path / "yaml.py").write_text(
        "from pathlib import Path\nPath('SHADOWED').write_text('stray yaml.py ran')\n"
    )
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(small_suite(with_plugins_key=False)))
    result = vqbench(
        "--plugin", "my_vq", "run", "mine.yaml", "--dry-run", cwd=tmp_path,
        console_script=console_script,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scaled_cosine_vq(" in result.stdout
    assert not (tmp_path / "SHADOWED").exists()


PLUGIN_HEAD = (
    "from vqbench import register_quantizer\n"
    "from vqbench.quantizer import ExplicitCodebookQuantizer, QuantizerParams\n"
)


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "raise ValueError('first line\\nthe last line')\n",
            "raised while being imported (ValueError: the last line at bad.py line 3)",
        ),
        (
            "@register_quantizer('twice')\nclass A(ExplicitCodebookQuantizer): pass\n"
            "@register_quantizer('twice')\nclass B(ExplicitCodebookQuantizer): pass\n",
            "quantizer 'twice' is already registered by",
        ),
        (
            "@register_quantizer('bad_params')\nclass C(ExplicitCodebookQuantizer):\n"
            "    class Params(QuantizerParams):\n        scale: float = 1.0\n",
            "C.Params derives from QuantizerParams; derive it from "
            "vqbench.quantizer.ExplicitCodebookParams",
        ),
        (
            "import no_such_dependency_xyz\n",
            "needs 'no_such_dependency_xyz', which is not installed",
        ),
    ],
    ids=["raises", "registers-twice", "params-base", "missing-dependency"],
)
def test_a_broken_plugin_is_one_line_naming_it(tmp_path, source, expected):
    (tmp_path / "bad.py").write_text(PLUGIN_HEAD + source)
    line = one_line_error(vqbench("list", "--plugin", "bad.py", cwd=tmp_path))
    assert "plugin 'bad.py'" in line and expected in line


# ---- the tokens in one's own code --------------------------------------------------------------
def test_tokenizer_from_run_encodes_and_decodes_as_the_run_reconstructs(home, clean_registry):
    folder, _ = home
    tok = Tokenizer.from_run(folder / "runs/mine/mine-s0")  # loads the recorded plugin
    assert tok.index_sizes() == [1024] and tok.resolution == 32
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    indices = tok.encode(images)
    f = tok.downsampling
    assert indices.shape == (3, 32 // f, 32 // f) and indices.dtype == torch.int64
    decoded = tok.decode(indices)
    assert decoded.shape == images.shape and decoded.min() >= -1 and decoded.max() <= 1
    with torch.no_grad():
        reconstruction, out = tok.model(images)
    assert torch.equal(indices, out.indices)
    torch.testing.assert_close(decoded, reconstruction.clamp(-1, 1))
    with pytest.raises(VQBenchError, match=r"in \[-1, 1\]; these range over \[0, 255\]"):
        tok.encode(torch.linspace(0, 255, 3 * 3 * 32 * 32).reshape(3, 3, 32, 32))
    with pytest.raises(VQBenchError, match="indices must lie in"):
        tok.decode(indices + 1024)


# ---- the two-SE rule, the ranking and the figures, against references ---------------------------
def summary_of(values):
    from vqbench.report import summarise

    return summarise(values)


@pytest.mark.parametrize(
    "a, b",
    [([20.0, 20.4, 20.2], [19.0, 19.5]), ([1.0, 3.0], [2.0, 2.5, 1.5]), ([5, 5.1], [5, 5.1])],
)
def test_two_se_rule_is_welchs_t_beyond_two(a, b):
    from scipy.stats import ttest_ind

    from vqbench.report import two_se_test

    test = two_se_test(summary_of(a), summary_of(b))
    t = ttest_ind(a, b, equal_var=False).statistic
    if test["se"] == 0:
        assert test["difference"] == 0 and not test["significant"]
    else:
        assert test["difference"] / test["se"] == pytest.approx(t)
        assert test["significant"] == (abs(t) > 2)
    assert two_se_test(summary_of([1.0]), summary_of(b)) is None  # one seed: no spread


def test_cells_are_marked_against_the_baseline_and_ranked_by_hand():
    from vqbench.report import Row, block_table, compare_to_baseline, ranking_lines

    def row(run, psnr, rfid):
        r = Row(0, run, run.upper(), None, "simvq", {}, "fp", None)
        r.results = [{"codebook_size": 1024, "independent_groups": 1}] * 2
        r.metrics = {"psnr_batch": summary_of(psnr), "rfid": summary_of(rfid)}
        return r

    # psnr: a beats base (diff 2, se 0.1); b is within noise of base; a beats b.
    # rfid (lower is better): b is worse than base and than a; a ~ base.
    base, a, b = (
        row("base", [20.0, 20.2], [5, 5.2]),
        row("a", [22, 22.2], [5.1, 5.3]),
        row("b", [19.0, 21.2], [9, 9.2]),
    )
    rows = [base, a, b]
    compare_to_baseline(rows, "base")
    table = block_table(rows)
    assert "BASE (baseline)" in table
    assert "22.10 ± 0.14 ▲" in table and "20.10 ± 1.56 " in table
    assert "20.10 ± 1.56 ▲" not in table and "20.10 ± 1.56 ▼" not in table  # within noise
    assert "9.10 ± 0.14 ▲" in table  # b's rFID is higher than the baseline's
    lines = ranking_lines(rows)
    assert "PSNR (higher is better): A > BASE" in lines
    assert "rFID (lower is better): BASE > B; A > B" in lines


def test_usage_figure_is_the_mean_and_std_over_seeds(tmp_path):
    from vqbench.plots import usage_series

    folders = []
    for seed, usages in enumerate([[0.1, 0.3, 0.5], [0.3, 0.5]]):  # seed 1 stopped earlier
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        records = [{"epoch": e, "step": e, "train_usage": u} for e, u in enumerate(usages)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        folders.append(str(folder))
    epochs, mean, std, n = usage_series(folders)
    assert epochs == [1, 2] and n == 2
    assert mean == pytest.approx([20.0, 40.0])
    assert std == pytest.approx([(2 * 10.0**2) ** 0.5] * 2)  # sample std of (10, 30), (30, 50)


def test_long_row_labels_stay_inside_the_figure(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    from vqbench.plots import save_figure

    fig, axes = plt.subplots(2, 1, figsize=(4, 2))
    for ax in axes:
        ax.imshow(torch.zeros(8, 32).numpy())
        ax.set_ylabel("a long method label, as a user writes it", rotation=0, ha="right")
    save_figure(fig, tmp_path / "f.png", 100)
    width, _ = Image.open(tmp_path / "f.png").size
    assert width > 400  # the canvas grew to the left to hold the labels (4 in at 100 dpi)


def test_probe_samples_are_large_enough_to_see_and_labelled(tmp_path):
    from PIL import Image

    from vqbench.probe import save_sample_grid

    save_sample_grid(torch.rand(16, 3, 32, 32) * 2 - 1, tmp_path / "s.png", "run: samples")
    width, height = Image.open(tmp_path / "s.png").size
    assert width >= 8 * 96 and height >= 2 * 96 + 20  # 8 x 2 samples of 96+ px and a title


def test_the_prior_samples_without_a_future_warning():
    import warnings

    from vqbench.prior import DigitLayout, TokenPrior

    prior = TokenPrior(DigitLayout([16], 4096), 4, width=16, layers=1, heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        torch.manual_seed(0)
        cached = prior.sample(2)
    torch.manual_seed(0)
    assert torch.equal(cached, prior.sample(2, use_cache=False))
