"""Bad input to `vqbench train` and `vqbench eval`: one line, exit code 2, nothing overwritten."""

import pytest

from tests.engine_helpers import run_cli, small_config, write_config
from vqbench.cli import main


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["train"].update(epoch=3), "unknown key 'train.epoch'; did you mean 'epochs'?"),
        (lambda c: c["train"].update(batch_size="many"), "train.batch_size='many' is invalid"),
        (lambda c: c["train"].update(batch_size=0), "train.batch_size=0 is invalid"),
        (lambda c: c["quantizer"].update(name="simvqq"), "did you mean 'simvq'?"),
        (
            lambda c: c["quantizer"]["params"].update(groups=7),
            "quantizer: group_vq: groups=7 does not divide codebook_size=64",
        ),
        (
            lambda c: c["data"].update(kind="imagefolder", root="/no/such", val_root="/no/such"),
            "dataset folder '/no/such' does not exist",
        ),
        (lambda c: c.update(wat=1), "unknown key 'wat'"),
    ],
)
def test_bad_configs(tmp_path, capsys, mutate, message):
    config = small_config("group_vq")
    mutate(config)
    path = write_config(tmp_path / "bad.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()  # caught before anything is written


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty"),
        ("train: [1, 2\n", "invalid YAML"),
        ("- 1\n- 2\n", "the top level must be a mapping"),
        ("name: !!python/object/apply:os.system ['echo hacked']\n", "invalid YAML"),
    ],
)
def test_unreadable_config_files(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys)


def test_an_output_folder_with_another_run_is_not_overwritten(tmp_path, capsys):
    first = write_config(tmp_path / "a.yaml", small_config("simvq", steps=1))
    second = write_config(tmp_path / "b.yaml", small_config("vanilla", steps=1))
    run_dir = tmp_path / "run"
    assert main(["train", str(first), "--out", str(run_dir), "--no-eval"]) == 0
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    capsys.readouterr()
    for extra in ([], ["--resume"]):
        assert main(["train", str(second), "--out", str(run_dir), *extra]) == 2
        assert "holds a different run" in one_line_error(capsys)
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    assert main(["train", str(second), "--out", str(run_dir), "--force", "--no-eval"]) == 0


def test_eval_of_something_that_is_not_a_run_or_a_truncated_checkpoint(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a vqbench run directory" in one_line_error(capsys)
    config = write_config(tmp_path / "a.yaml", small_config("simvq", steps=2))
    run_dir = tmp_path / "run"
    main(["train", str(config), "--out", str(run_dir), "--no-eval"])
    capsys.readouterr()
    weights = run_dir / "checkpoints" / "step-00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["eval", str(run_dir)]) == 2
    assert "is damaged: model.safetensors does not match its checksum" in one_line_error(capsys)


def test_missing_config_file_via_the_console():
    result = run_cli("train", "no_such.yaml")
    assert result.returncode == 2 and "config file 'no_such.yaml' does not exist" in result.stderr
