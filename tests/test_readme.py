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


def plugin_example() -> str:
    text = README.read_text()
    match = re.search(
        r"<!-- plugin-example -->\n```python\n(.*?)```\n<!-- /plugin-example -->", text, re.S
    )
    assert match, "README lost its plugin example"
    return match.group(1)


def test_plugin_example_is_short():
    assert len(plugin_example().strip().splitlines()) <= 20


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
        row = next(line for line in result.stdout.splitlines() if "cosine_vq" in line)
        assert "explicit" in row and "Vanilla VQ on unit-norm codes." in row


def test_plugin_quantizes_to_its_nearest_unit_code(tmp_path, clean_registry):
    (tmp_path / "readme_vq.py").write_text(plugin_example())
    load_plugin(str(tmp_path / "readme_vq.py"))
    q = create_quantizer("cosine_vq", codebook_size=64, dim=8)
    z = torch.randn(2, 8, 4, 4)
    out = q(z)
    with torch.no_grad():
        assert_nearest(z.permute(0, 2, 3, 1).reshape(-1, 8), q.codebook(), out.indices.reshape(-1))
