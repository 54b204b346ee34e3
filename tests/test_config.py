"""vqbench.config: defaults, fingerprints, schedules, the probe section, strict YAML."""

from __future__ import annotations

import pytest
import yaml

from vqbench import VQBenchError
from vqbench.config import (
    ProbeConfig,
    RunConfig,
    ScheduleConfig,
    parse_probe_config,
    parse_run_config,
    read_yaml,
)


def test_the_fingerprint_ignores_what_does_not_change_the_weights():
    base = RunConfig()
    same = RunConfig(name="other", train={"log_every": 7}, eval={"batch_size": 3})
    assert same.fingerprint() == base.fingerprint()
    assert RunConfig(optim={"lr": 2e-4}).fingerprint() != base.fingerprint()
    # The settings fingerprint is shared by the rows of a comparison: not the quantizer.
    other_quantizer = RunConfig(quantizer={"name": "vanilla"}, seed=3)
    assert other_quantizer.settings_fingerprint() == base.settings_fingerprint()
    assert other_quantizer.fingerprint() != base.fingerprint()


def test_the_fingerprint_covers_the_quantizers_resolved_defaults(monkeypatch):
    """Spelling a default out is the same run; a changed default (or recipe value) is another
    run, which the fingerprint of the parameters as written (0.2.0's) could not see."""
    import vqbench.config as config_module
    from vqbench.quantizer import get_quantizer_class

    vanilla = {"name": "vanilla", "params": {"codebook_size": 64, "dim": 16}}
    base = RunConfig(quantizer=vanilla)
    spelled = {**vanilla, "params": {**vanilla["params"], "beta": 0.25, "recipe": "reference"}}
    assert RunConfig(quantizer=spelled).fingerprint() == base.fingerprint()
    assert RunConfig(quantizer=spelled).legacy_fingerprint() != base.legacy_fingerprint()
    shared = {**vanilla, "params": {**vanilla["params"], "recipe": "shared"}}
    assert RunConfig(quantizer=shared).fingerprint() != base.fingerprint()

    before = base.fingerprint(), base.legacy_fingerprint()
    original = get_quantizer_class("vanilla")

    class OtherDefault(original.Params):
        beta: float = 0.5

    changed = type("ChangedVanilla", (original,), {"Params": OtherDefault})
    monkeypatch.setattr(config_module, "get_quantizer_class", lambda name: changed)
    assert RunConfig(quantizer=vanilla).legacy_fingerprint() == before[1]
    assert RunConfig(quantizer=vanilla).fingerprint() != before[0]


def test_a_run_folder_from_before_resolved_fingerprints_is_refused_with_the_reason(tmp_path):
    from vqbench.rundir import RunDir

    config = RunConfig(quantizer={"name": "vanilla", "params": {"codebook_size": 64, "dim": 16}})
    (tmp_path / "fingerprint").write_text(config.legacy_fingerprint() + "\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.resolved(), sort_keys=False))
    with pytest.raises(VQBenchError, match="recorded by vqbench 0.2.0") as err:
        RunDir(tmp_path).check(config.fingerprint(), resume=True, force=False, config=config)
    assert "\n" not in str(err.value)


def test_the_default_schedule_is_left_out_of_the_fingerprints_and_others_are_not():
    base = RunConfig()
    assert "schedule" in base.resolved()["optim"]  # recorded in config.yaml
    cosine = RunConfig(optim={"schedule": {"kind": "cosine"}})
    assert cosine.fingerprint() != base.fingerprint()
    assert cosine.settings_fingerprint() != base.settings_fingerprint()


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"kind": "constant", "warmup_steps": 5}, "constant schedule has no warmup_steps"),
        ({"kind": "linear_warmup"}, "linear_warmup needs warmup_steps > 0"),
        ({"kind": "step"}, "kind"),
        ({"kind": "cosine", "min_lr_ratio": 2}, "min_lr_ratio"),
    ],
)
def test_bad_schedules_are_one_line(schedule, message):
    with pytest.raises(VQBenchError, match=message) as err:
        parse_run_config({"optim": {"schedule": schedule}}, "c.yaml")
    assert "\n" not in str(err.value) and "c.yaml" in str(err.value)
    assert ScheduleConfig().kind == "constant"


def test_the_probe_section_parses_from_a_mapping_or_a_file_and_its_fingerprint_skips_seeds():
    a = parse_probe_config({"steps": 10, "seeds": [0, 1]}, "s.yaml")
    b = parse_probe_config({"probe": {"steps": 10, "seeds": [5]}}, "s.yaml")
    assert a.fingerprint() == b.fingerprint() != ProbeConfig().fingerprint()
    with pytest.raises(VQBenchError, match="seeds must be distinct"):
        parse_probe_config({"seeds": [1, 1]}, "s.yaml")
    with pytest.raises(VQBenchError, match="must be a mapping"):
        parse_probe_config([1], "s.yaml")


def test_yaml_refuses_a_key_given_twice_and_tags(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("optim:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(VQBenchError, match="given twice"):
        read_yaml(twice)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(VQBenchError, match="invalid YAML"):
        read_yaml(tagged)
