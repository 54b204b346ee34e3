"""The layer order of the core, enforced: a module imports only from earlier layers.

Every `import` and `from ... import` counts, inside functions too, so that no import cycle can
come back. A package (`vqbench.metrics`, `vqbench.models`) is one node; its own modules may
import each other. The built-in plugins import the core only (never each other), as a
third-party plugin would.
"""

import ast
import re
from pathlib import Path

import pytest

from vqbench.quantizer import list_quantizers

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. A module may import modules of strictly earlier layers only.
LAYERS = [
    ["errors", "version"],
    ["bounded"],
    ["files", "distributed", "params", "registry", "search", "code_softmax", "kmeans", "timing"],
    ["lfq_entropy", "estimator", "restart", "shards"],
    ["quantizer"],
    ["data", "pretrained", "published"],
    ["models", "losses", "metrics"],
    ["protocols"],
    ["config"],
    ["rundir", "checkpoint"],
    ["build", "published_run"],
    ["evaluate", "tokenizer"],
    ["train", "export"],
    ["prior"],
    ["probe"],
    ["suite"],
    ["report"],
    ["plots", "site"],
    ["runner"],
    ["cli", "__init__"],
    ["__main__"],
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def node_of(module: str) -> str | None:
    """`vqbench.metrics.fid` -> `metrics`; `vqbench` (the package) -> `__init__`."""
    parts = module.split(".")
    if parts[0] != "vqbench":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                package = ".".join(path.relative_to(ROOT).with_suffix("").parts[: -node.level])
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            submodules = {f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")}
            # `from vqbench import distributed` imports a module, not the package's names.
            found |= submodules if len(submodules) == len(node.names) else submodules | {base}
    return found


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def core_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted((ROOT / "vqbench").rglob("*.py")):
        source = node_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if path.name == "__init__.py" and path.parent.name != "vqbench":
            source = path.parent.name
        deps = {node_of(m) for m in imported_modules(path)}
        # `from vqbench import distributed` names a module, not the package.
        deps = {d for d in deps if d in RANK or d == "__init__"} - {source}
        edges.setdefault(source, set()).update(deps)
    return edges


def test_every_core_module_has_a_layer():
    assert set(core_edges()) <= set(RANK), set(core_edges()) - set(RANK)


@pytest.mark.parametrize("module", sorted(core_edges()))
def test_imports_go_only_to_earlier_layers(module):
    edges = core_edges()
    wrong = sorted(d for d in edges[module] if d != "__init__" and RANK[d] >= RANK[module])
    assert not wrong, f"vqbench.{module} (layer {RANK[module]}) imports {wrong}"
    if module != "__init__":
        # `import vqbench` (the package) would pull in the re-exports above; name the module.
        assert "__init__" not in edges[module] or module in ("cli", "__main__"), module


def test_plugins_import_the_core_only():
    plugin_tops = {"quantizers", "estimators", "adapters"}
    plugin_tops |= {f"vqbench_{top}" for top in plugin_tops}
    for folder in ("quantizers", "estimators", "adapters"):
        for path in (ROOT / folder).glob("*.py"):
            for module in imported_modules(path):
                top = module.split(".")[0]
                if folder == "adapters" and module.startswith("vqbench_adapters._"):
                    continue  # published architectures share private building blocks
                assert top not in plugin_tops, (
                    f"{path.name} imports {module}: plugins use the registry, not each other"
                )


def test_no_quantizer_name_in_the_engine_and_reports():
    """What a quantizer can do is asked of it, never guessed from its name.

    Every registered name is looked for in the string constants that could select behaviour
    (keys, values compared with: those without white space). Prose (messages, notes) may use
    words that are also names ("the product of the index sizes")."""
    names = "|".join(map(re.escape, list_quantizers()))  # from the registry
    pattern = re.compile(rf"(?<![A-Za-z0-9_])({names})(?![A-Za-z0-9_])")
    for module in ("report", "plots", "evaluate", "train", "runner", "prior", "probe"):
        tree = ast.parse((ROOT / "vqbench" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.search(r"\s", node.value):
                    continue
                found = pattern.search(node.value)
                assert not found, f"vqbench/{module}.py names '{found.group(1)}'"


#: Above the core: the reproduction study and the benchmarks use the core (any layer) and their
#: own modules, never each other, the tests or the built-in plugins' modules (the registry
#: gives quantizers by name); the core never imports any of them.
OUTER = {
    "reproduction": {"vqbench_reproduction", "reproduction"},
    "benchmarks": {p.stem for p in (ROOT / "benchmarks").glob("*.py")},
}
NOT_FOR_THE_CORE = {
    "reproduction",
    "vqbench_reproduction",
    "benchmarks",
    "tests",
    "quantizers",
    "estimators",
    "vqbench_quantizers",
    "vqbench_estimators",
    "adapters",
    "vqbench_adapters",
}


def first_party_imports(path: Path) -> set[str]:
    """Top-level names of the project's own packages and folders that `path` imports."""
    tops = {m.split(".")[0] for m in imported_modules(path)}
    own = NOT_FOR_THE_CORE | {"vqbench"} | OUTER["benchmarks"]
    return tops & own


def test_the_core_imports_no_outer_folder():
    for path in sorted((ROOT / "vqbench").rglob("*.py")):
        wrong = first_party_imports(path) & (NOT_FOR_THE_CORE | OUTER["benchmarks"])
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


@pytest.mark.parametrize("folder", sorted(OUTER))
def test_reproduction_and_benchmarks_import_the_core_and_themselves_only(folder):
    files = sorted((ROOT / folder).glob("*.py"))
    assert files
    for path in files:
        wrong = first_party_imports(path) - {"vqbench"} - OUTER[folder]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
