"""Every registered quantizer and estimator has a reference test here, or a stated reason.

The names come from the registries' entry points (the built-ins and any installed plugin),
not from a list; classes registered at run time by other tests (toy quantizers) are not
methods. A
method counts as covered by `tests/reference/test_<name>.py`, or by a module that names it in
its `METHODS` tuple (one module can cover several methods run by one reference file), and
the module must hold at least one test function.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest

import tests.reference
from vqbench.estimator import ESTIMATORS
from vqbench.quantizer import QUANTIZERS

#: Methods with no public code to compare against, and what tests them instead.
NO_REFERENCE = {
    "radius": "no public code: tested against the paper's equations "
    "(tests/estimators/test_radius.py)",
}


def reference_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.iter_modules(tests.reference.__path__)]
    return [
        importlib.import_module(f"tests.reference.{name}")
        for name in sorted(names)
        if name.startswith("test_") and name != "test_coverage"
    ]


def covered_methods() -> dict[str, str]:
    covered: dict[str, str] = {}
    for module in reference_modules():
        short = module.__name__.rsplit(".", 1)[1]
        has_tests = any(name.startswith("test_") for name in vars(module))
        assert has_tests, f"{short} holds no test function"
        for method in (short.removeprefix("test_"), *getattr(module, "METHODS", ())):
            covered[method] = short
    return covered


REGISTERED = [
    (registry.kind, name)
    for registry in (QUANTIZERS, ESTIMATORS)
    for name in sorted({ep.name for ep in entry_points(group=registry.group)})
]


@pytest.mark.parametrize(("kind", "name"), REGISTERED, ids=[n for _, n in REGISTERED])
def test_every_method_has_a_reference_test_or_a_reason(kind: str, name: str) -> None:
    covered = covered_methods()
    assert name in covered or name in NO_REFERENCE, (
        f"{kind} '{name}' has no reference test in tests/reference (test_{name}.py, or a "
        f"module whose METHODS names it) and no reason in NO_REFERENCE; add one"
    )
    assert not (name in covered and name in NO_REFERENCE), f"{name}: tested, drop the reason"


def test_no_reason_names_an_unregistered_method() -> None:
    registered = {name for _, name in REGISTERED}
    assert set(NO_REFERENCE) <= registered


def test_readme_fidelity_table_has_a_row_per_method() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    heading = "## Fidelity: every method against its reference"
    assert heading in readme, "README lost its fidelity section"
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M))
    registered = {name for _, name in REGISTERED}
    assert registered <= rows, f"no fidelity row for {sorted(registered - rows)}"


# ---- published-tokenizer adapters ------------------------------------------------------------
ADAPTER_GROUP = "vqbench.tokenizers"
REGISTERED_ADAPTERS = sorted({ep.name for ep in entry_points(group=ADAPTER_GROUP)})


#: Adapters of vqbench's own formats (no one else's code to compare with), and the test that
#: proves each instead: file and test function.
OWN_FORMAT_ADAPTERS = {
    "vqbench_export": (  # evaluated against the run's own eval.json
        "tests/test_export.py",
        "test_an_export_evaluated_as_a_published_tokenizer_gives_the_runs_own_numbers",
    ),
}


def covered_adapters() -> dict[str, str]:
    """Adapter name -> the reference module that proves it: `test_adapter_<name>.py` or a
    module whose `ADAPTERS` tuple names it (with at least one test function)."""
    covered: dict[str, str] = {}
    for module in reference_modules():
        short = module.__name__.rsplit(".", 1)[1]
        names = list(getattr(module, "ADAPTERS", ()))
        if short.startswith("test_adapter_"):
            names.append(short.removeprefix("test_adapter_"))
        if names:
            assert any(n.startswith("test_") for n in vars(module)), f"{short} holds no test"
        covered.update(dict.fromkeys(names, short))
    return covered


@pytest.mark.parametrize("name", REGISTERED_ADAPTERS)
def test_every_adapter_has_a_reference_test(name: str) -> None:
    """A published-tokenizer adapter is proven by `tests/reference/test_adapter_<name>.py` (or a
    module whose `ADAPTERS` tuple names it) loading a checkpoint that the official code wrote."""
    if name in OWN_FORMAT_ADAPTERS:
        file, test = OWN_FORMAT_ADAPTERS[name]
        source = (Path(__file__).resolve().parents[2] / file).read_text()
        assert f"def {test}(" in source, f"{file} lost {test}, which proves adapter '{name}'"
        return
    assert name in covered_adapters(), (
        f"tokenizer adapter '{name}' has no reference test in tests/reference "
        f"(test_adapter_{name}.py, or a module whose ADAPTERS names it); add one"
    )
