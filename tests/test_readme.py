"""The README's plugin example, run as a user would: a file outside the package."""

import re
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import assert_nearest
from vqbench import create_quantizer
from vqbench.registry import load_plugin

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(name: str, language: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {name} -->\n```{language}\n(.*?)```\n<!-- /{name} -->", text, re.S)
    assert match, f"README lost its {name}"
    return match.group(1)


def plugin_example() -> str:
    return readme_block("plugin-example", "python")


def suite_example() -> str:
    return readme_block("suite-example", "yaml")


def test_plugin_example_is_short():
    assert len(plugin_example().strip().splitlines()) <= 22


def test_suite_example_has_three_runs_a_plugin_and_every_key_is_described():
    import yaml

    from vqbench.suite import SuiteFile

    suite = yaml.safe_load(suite_example())
    assert len(suite["runs"]) == 3 and suite["plugins"] == ["my_vq.py"]
    assert "scaled_cosine_vq" in {run["quantizer"]["name"] for run in suite["runs"]}
    described = set(re.findall(r"^- `(\w+)`", README.read_text(), re.M))
    assert set(SuiteFile.model_fields) <= described, set(SuiteFile.model_fields) - described


def test_suite_example_validates_with_its_plugin(tmp_path):
    (tmp_path / "my_vq.py").write_text(plugin_example())
    (tmp_path / "mine.yaml").write_text(suite_example())
    result = subprocess.run(
        [sys.executable, "-m", "vqbench", "run", "mine.yaml", "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "6 runs in 1 block" in result.stdout and "scaled_cosine_vq(" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_cli_lists_the_plugin_from_a_module_and_from_a_file(tmp_path):
    (tmp_path / "my_vq.py").write_text(plugin_example())
    for plugin in ("my_vq", str(tmp_path / "my_vq.py")):
        result = subprocess.run(
            [sys.executable, "-m", "vqbench", "--plugin", plugin, "list"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        row = next(line for line in result.stdout.splitlines() if "scaled_cosine_vq" in line)
        assert "explicit" in row and "Vanilla VQ on codes of one fixed norm." in row
        assert "scale=1.0" in result.stdout  # its own parameter, listed with its default


def test_plugin_quantizes_to_its_nearest_unit_code(tmp_path, clean_registry):
    (tmp_path / "readme_vq.py").write_text(plugin_example())
    load_plugin(str(tmp_path / "readme_vq.py"))
    q = create_quantizer("scaled_cosine_vq", codebook_size=64, dim=8, scale=3.0)
    z = torch.randn(2, 8, 4, 4)
    out = q(z)
    with torch.no_grad():
        codes = q.codebook()
        assert torch.allclose(codes.norm(dim=1), torch.full((64,), 3.0))
        assert_nearest(z.permute(0, 2, 3, 1).reshape(-1, 8), codes, out.indices.reshape(-1))
