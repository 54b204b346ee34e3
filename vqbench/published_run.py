"""The folder of a published tokenizer's evaluation: what `vqbench eval --tokenizer NAME
--checkpoint FILE --out DIR` writes and what `vqbench probe DIR` and a suite's report read.

    published.yaml  the tokenizer (adapter, checkpoint file, options, trust), the data and
                    evaluation settings it was measured under, and the checkpoint's sha256
    fingerprint     hash of the adapter, the checkpoint's bytes, the options, data and seed
    eval.json       the same keys as a trained run's, plus `tokenizer`, `checkpoint_sha256`,
                    `source` and `options`
    figures.json, reconstructions.png, probe.json, probe-samples.png   as in a run folder

Nothing is trained, so there is no `config.yaml` and no `checkpoints/`: a folder holding
`published.yaml` is a published tokenizer's (`is_published_folder`), and `RunDir` names its
result files as it does for a run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pydantic
import yaml

from vqbench.config import (
    DataConfig,
    EvalConfig,
    Section,
    check_name,
    check_protocol_resolution,
    format_config_error,
    read_yaml,
)
from vqbench.errors import VQBenchError
from vqbench.files import atomic_write_text
from vqbench.protocols import get_protocol
from vqbench.published import PublishedTokenizer, get_adapter_class, load_published
from vqbench.rundir import RunDir, load_recorded_plugins, record_plugins

SPEC_FILE = "published.yaml"


class TokenizerSpec(Section):
    """Which released tokenizer: an adapter name (`vqbench.tokenizers`), its checkpoint file,
    the adapter's options and whether the file may hold pickled Python objects."""

    adapter: str
    checkpoint: str
    options: dict[str, Any] = {}
    trust: bool = False


class PublishedConfig(Section):
    """A published tokenizer under evaluation settings: the parts of a run config that
    evaluation and the probe read (`name`, `seed`, `data`, `eval`), and the tokenizer."""

    name: str = "published"
    seed: pydantic.NonNegativeInt = 0
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    tokenizer: TokenizerSpec

    @pydantic.field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name, "name", parts=True)

    @pydantic.model_validator(mode="after")
    def _protocol_resolution(self) -> PublishedConfig:
        check_protocol_resolution(self.data, self.eval)
        return self


def parse_published_config(data: dict[str, Any], source: str) -> PublishedConfig:
    try:
        return PublishedConfig(**data)
    except pydantic.ValidationError as err:
        raise VQBenchError(format_config_error(source, err, PublishedConfig)) from None


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """`["preset=f16_16384", "embed_dim=8"]` -> `{"preset": "f16_16384", "embed_dim": 8}`:
    each value read as plain YAML (numbers, booleans, lists), keys given once."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise VQBenchError(f"--option '{pair}' is not KEY=VALUE; write e.g. --option size=16")
        if key.strip() in options:
            raise VQBenchError(f"--option {key.strip()} is given twice; give it once")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise VQBenchError(f"checkpoint '{path}' cannot be read ({err.strerror})") from None
    return digest.hexdigest()


def tokenizer_fingerprint(config: PublishedConfig, sha256: str) -> str:
    """What the folder's tokens depend on: the adapter, the checkpoint's bytes, the options,
    the images (`data`) and the seed (the embedded photos' crops); as a trained run's
    fingerprint, not the evaluation settings."""
    spec = config.tokenizer
    key = [spec.adapter, sha256, spec.options, config.data.model_dump(mode="json"), config.seed]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_tokenizer(spec: TokenizerSpec) -> PublishedTokenizer:
    """The adapter `spec.adapter` built from the checkpoint, in evaluation mode."""
    return load_published(spec.adapter, spec.checkpoint, trust=spec.trust, **spec.options)


def is_published_folder(path: str | Path) -> bool:
    return (Path(path) / SPEC_FILE).is_file()


def read_published(path: str | Path) -> PublishedConfig:
    """The settings a published tokenizer's folder records."""
    file = Path(path) / SPEC_FILE
    load_recorded_plugins(Path(path))  # an adapter a plugin registered
    data = read_yaml(file)
    data.pop("checkpoint_sha256", None)
    return parse_published_config(data, str(file))


def recorded_sha256(path: str | Path) -> str | None:
    file = Path(path) / SPEC_FILE
    return read_yaml(file).get("checkpoint_sha256") if file.is_file() else None


def check_out_folder(out: Path, fingerprint: str, force: bool) -> None:
    """`out` is empty, or holds this tokenizer's earlier evaluation (replaced), or `force`."""
    if not out.exists() or force:
        return
    if not out.is_dir():
        raise VQBenchError(f"--out '{out}' is a file; give a folder")
    if (out / "config.yaml").is_file():
        raise VQBenchError(f"'{out}' holds a trained run; give another --out")
    theirs = RunDir(out).recorded_fingerprint()
    if theirs is not None and theirs != fingerprint:
        raise VQBenchError(
            f"'{out}' holds another evaluation (another tokenizer, checkpoint, options or data: "
            f"fingerprint {theirs}, this one {fingerprint}); give another --out or pass --force "
            f"to replace it"
        )
    if theirs is None and any(out.iterdir()):
        raise VQBenchError(f"'{out}' is not empty; give a new or empty --out (or --force)")


def record(out: Path, config: PublishedConfig, sha256: str) -> RunDir:
    """Write `published.yaml`, `fingerprint` and the plugins loaded (`plugins.json`, for an
    adapter a plugin registers) into `out` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    data = {**config.model_dump(mode="json"), "checkpoint_sha256": sha256}
    atomic_write_text(out / SPEC_FILE, yaml.safe_dump(data, sort_keys=False))
    atomic_write_text(out / "fingerprint", tokenizer_fingerprint(config, sha256) + "\n")
    record_plugins(out)
    return RunDir(out)


def with_protocol(settings: dict[str, Any], protocol: str | None) -> dict[str, Any]:
    """`eval.protocol: NAME` set in evaluation settings (`--protocol NAME`): the protocol
    (`vqbench.protocols`) decides split, resize and metrics; an unknown name is one line when
    the settings are validated."""
    if protocol is None:
        return settings
    return {**settings, "eval": {**(settings.get("eval") or {}), "protocol": protocol}}


def settings_of(data: dict[str, Any]) -> dict[str, Any]:
    """The evaluation settings (`data`, `eval`, `seed`) of a run config, or of a suite file's
    `shared:` section."""
    source = data["shared"] if isinstance(data.get("shared"), dict) else data
    return {k: source[k] for k in ("data", "eval", "seed") if k in source}


def data_section(data: str, train_data: str | None) -> dict[str, Any]:
    """`--data DIR|embedded [--train-data DIR]` as a `data:` section."""
    if data == "embedded":
        if train_data is not None:
            raise VQBenchError("--train-data goes with --data DIR, not with the embedded photos")
        return {"kind": "embedded"}
    for flag, folder in (("--data", data), ("--train-data", train_data)):
        if folder is not None and not Path(folder).is_dir():
            raise VQBenchError(
                f"{flag} '{folder}' is not a folder; give a folder of images (or --data embedded)"
            )
    return {"kind": "imagefolder", "root": train_data or data, "val_root": data}


def published_config(
    adapter: str,
    checkpoint: str | Path,
    *,
    options: list[str] | None = None,
    trust: bool = False,
    config_file: str | Path | None = None,
    data: str | None = None,
    train_data: str | None = None,
    resolution: int | None = None,
    protocol: str | None = None,
    name: str = "published",
) -> PublishedConfig:
    """The settings of `vqbench eval --tokenizer ...`: the data and eval sections of
    `config_file` (a run config or a suite file), `--data` replacing its data, the image size
    `resolution`, else the file's, else the protocol's, else the one the released weights were
    trained at."""
    default_resolution = get_adapter_class(adapter).resolution  # an unknown name: one line
    if config_file is None and data is None:
        raise VQBenchError(
            "give the validation images: --data DIR (or --data embedded), or --config FILE"
        )
    if train_data is not None and data is None:
        raise VQBenchError("--train-data goes with --data DIR (the validation images)")
    settings = settings_of(read_yaml(config_file)) if config_file else {}
    section = dict(settings.get("data") or {})
    if data is not None:
        kept = {"resolution": section["resolution"]} if "resolution" in section else {}
        section = {**data_section(data, train_data), **kept}
    if resolution is not None:
        section["resolution"] = resolution
    fixed = get_protocol(protocol).resolution if protocol is not None else None
    section.setdefault("resolution", fixed or default_resolution)  # the protocol's size first
    settings = with_protocol({**settings, "data": section}, protocol)
    try:
        check_name(name, "name")
    except ValueError:
        name = "published"
    tokenizer = {
        "adapter": adapter,
        "checkpoint": str(Path(checkpoint).absolute()),
        "options": parse_options(options),
        "trust": trust,
    }
    source = str(config_file) if config_file else "the command line"
    return parse_published_config({**settings, "name": name, "tokenizer": tokenizer}, source)
