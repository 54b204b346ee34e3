"""vqbench.config: defaults, fingerprints, schedules, the probe section, strict YAML."""

from __future__ import annotations

import pytest

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
