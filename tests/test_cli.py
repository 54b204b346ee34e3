import subprocess
import sys

import pytest

from vqbench import __version__
from vqbench.cli import main


def vqbench(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "vqbench", *args], capture_output=True, text=True, cwd=cwd
    )


def test_list_shows_every_quantizer_with_kind_and_defaults():
    result = vqbench("list")
    assert result.returncode == 0
    rows = {
        line.split("|")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| name")
    }
    for name in ["vanilla", "ema", "fc", "fsq", "lfq", "vqgan_lc", "simvq", "group_vq"]:
        assert name in rows
    assert "implicit" in rows["fsq"] and "explicit" in rows["group_vq"]
    assert "groups=64" in result.stdout and "levels=[8, 8, 8, 5, 5, 5]" in result.stdout
    from importlib.metadata import entry_points

    from vqbench.published import get_adapter_class

    for point in entry_points(group="vqbench.tokenizers"):  # each with the code it follows
        assert point.name in rows, point.name
        assert get_adapter_class(point.name).source in rows[point.name], point.name


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"vqbench {__version__}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--plugin", "no_such_module", "list"], "cannot import plugin module 'no_such_module'"),
        (["run", "no_such_suite.yaml"], "config file 'no_such_suite.yaml' does not exist"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(args, message):
    result = vqbench(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("vqbench: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_duplicate_plugin_name_fails_on_the_cli(tmp_path):
    (tmp_path / "dup.py").write_text(
        "from vqbench import register_quantizer\n"
        "from vqbench.quantizer import ExplicitCodebookQuantizer\n\n"
        "@register_quantizer('simvq')\n"
        "class Clash(ExplicitCodebookQuantizer):\n"
        "    pass\n"
    )
    result = vqbench("--plugin", "dup", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "quantizer 'simvq' is already registered by vqbench_quantizers.simvq.SimVQ" in result.stderr
    )
