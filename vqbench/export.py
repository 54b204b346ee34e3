"""`vqbench export RUN_DIR --out DIR`: a trained run as a tokenizer folder anyone can load.

    DIR/config.json         what builds the model: preset, quantizer and its resolved
                            parameters, image size, the plugin providing the quantizer, the
                            vqbench version, where the weights come from
    DIR/model.safetensors   the evaluated weights (the model EMA where the run's evaluation
                            used it), from the checkpoint its eval.json measured
    DIR/README.md           a model card: the run's eval.json metrics, its suite, its
                            settings (data, training, evaluation protocol) and seed

`vqbench.Tokenizer.from_pretrained(DIR)` loads it (or, after `push_to_hub`, `"user/name"`).
The folder is written under a temporary name beside DIR (`.DIR.tmp-PID`) and renamed into
place, so a kill leaves either no DIR or a complete one; the next export to DIR removes the
temporary folder a killed one left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from vqbench.build import find_run
from vqbench.checkpoint import is_checkpoint
from vqbench.config import read_yaml
from vqbench.errors import VQBenchError
from vqbench.files import check_writable, read_json, write_error
from vqbench.rundir import RunDir, SuiteDir
from vqbench.tokenizer import CONFIG_FILE, WEIGHTS_FILE, Tokenizer

#: The model card's settings sections, from the run's resolved config.
CARD_SECTIONS = ("data", "train", "loss", "optim", "eval")


def evaluated_checkpoint(
    path: Path, run: RunDir, checkpoint: Path
) -> tuple[Path, dict[str, Any] | None]:
    """The checkpoint to export and the `eval.json` results that measured it (None if none
    did): the `step-*` folder given, else the one the run's evaluation measured, else the
    latest."""
    results = read_json(run.eval_file())
    measured = results.get("checkpoint") if results is not None else None
    if not is_checkpoint(path) and isinstance(measured, str):
        if (run.checkpoints / measured).is_dir():
            checkpoint = run.checkpoints / measured
    return checkpoint, results if measured == checkpoint.name else None


def check_target(out: Path, force: bool) -> None:
    """`out` may be written: absent or an empty folder, or any folder with `force`."""
    if out.exists() and not out.is_dir():
        raise VQBenchError(f"--out '{out}' is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise VQBenchError(f"--out '{out}' is not empty; choose another folder or pass --force")
    check_writable(out.parent, "output folder")


def _suite_line(run: RunDir) -> str:
    suite_file = SuiteDir.holding(run).suite_file
    if not suite_file.is_file():
        return "none (a single run: `vqbench train`)"
    spec = read_yaml(suite_file)
    spec = spec if isinstance(spec, dict) else {}
    title = f": {spec['title']}" if spec.get("title") else ""
    return f"`{spec.get('suite', suite_file.parent.name)}`{title}"


def _metric_rows(results: dict[str, Any] | None) -> list[str]:
    if results is None:
        return ["Not evaluated: run `vqbench eval RUN_DIR` before exporting to add the metrics."]
    rows = ["| metric | value |", "|---|---|"]
    for key, value in results.items():
        if isinstance(value, float):
            rows.append(f"| {key} | {value:.4f} |")
        elif isinstance(value, (int, str)) or value is None:
            rows.append(f"| {key} | {value} |")
    return rows


def model_card(tok: Tokenizer, run: RunDir, results: dict[str, Any] | None) -> str:
    """README.md: what the tokenizer is, how to load it, the run's metrics and settings."""
    config, spec = tok.run_config, tok.export_config()
    q = spec["quantizer"]
    resolved = config.resolved()
    settings = yaml.safe_dump({k: resolved[k] for k in CARD_SECTIONS}, sort_keys=False)
    plugin = spec["plugin"]
    plugin_line = (
        "vqbench's own"
        if plugin is None
        else f"plugin {plugin.get('package') or plugin.get('module') or plugin.get('file')}"
    )
    tags = "\n".join(f"  - {t}" for t in ("image-tokenizer", "vector-quantization", q["name"]))
    return "\n".join(
        [
            "---",
            "library_name: vqbench",
            f"tags:\n{tags}",
            "---",
            "",
            f"# {config.name}: a {q['name']} image tokenizer",
            "",
            f"Trained and evaluated with vqbench {spec['vqbench_version']}; exported from the run "
            f"`{config.name}` (checkpoint `{spec['source']['checkpoint']}`, weights "
            f"`{spec['weights']}`, seed {config.seed}, fingerprint `{config.fingerprint()}`).",
            "",
            "```python",
            "from vqbench import Tokenizer",
            "",
            'tok = Tokenizer.from_pretrained("THIS_FOLDER_OR_USER/NAME")  # device="cuda"',
            f"indices = tok.encode(images)  # (B, 3, H, W) in [-1, 1] -> (B, H/{tok.downsampling}"
            f", W/{tok.downsampling})",
            "images = tok.decode(indices)",
            "```",
            "",
            "## Tokenizer",
            "",
            f"- quantizer: `{q['name']}` ({plugin_line}), parameters `{q['params']}`",
            f"- model: preset `{spec['model']['preset']}`, overrides "
            f"`{spec['model']['overrides']}`",
            f"- images: {spec['resolution']} x {spec['resolution']}, downsampling "
            f"{spec['downsampling']}, index sizes {spec['index_sizes']}",
            "",
            "## Evaluation (the run's eval.json)",
            "",
            *_metric_rows(results),
            "",
            "## Run",
            "",
            f"- suite: {_suite_line(run)}",
            f"- seed: {config.seed}; settings fingerprint `{config.settings_fingerprint()}`",
            "- data, training, loss, optimiser and evaluation protocol:",
            "",
            "```yaml",
            settings.rstrip(),
            "```",
            "",
        ]
    )


def _fsync_tree(folder: Path) -> None:
    """Every file on disk, readable as the umask allows (the library writes some 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def remove_stale_temporaries(out: Path) -> None:
    """Temporary folders of exports to `out` whose process was killed (`.NAME.tmp-PID`)."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if tmp.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _write_folder(tok: Tokenizer, card: str, tmp: Path) -> None:
    tmp.mkdir(parents=True)
    tok.card = card  # what save_pretrained (and a later push_to_hub) writes as README.md
    tok.save_pretrained(tmp)
    for name in (CONFIG_FILE, WEIGHTS_FILE, "README.md"):
        if not (tmp / name).is_file():  # pragma: no cover - the mixin's own contract
            raise VQBenchError(f"save_pretrained wrote no {name}")
    _fsync_tree(tmp)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` (with --force) is moved aside first."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def export_run(run_dir: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write the tokenizer folder of a trained run (module docstring); returns `out`."""
    run, latest = find_run(run_dir)
    checkpoint, results = evaluated_checkpoint(Path(run_dir), run, latest)
    out = Path(out)
    check_target(out, force)
    tok = Tokenizer.from_run(checkpoint)
    card = model_card(tok, run, results)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        _write_folder(tok, card, tmp)
        _move_into_place(tmp, out)
    except OSError as err:
        raise write_error(out, err) from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return out
