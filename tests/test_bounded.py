"""Config and record files that would explode: one line, exit 2, nothing written, quickly.

The counts of `vqbench.bounded` are compared with brute force (the composed YAML graph walked
with every alias expanded; the depth of the parsed JSON), then each family of hostile file is
fed to the command that reads it: a billion laughs (in a run config, a suite, a run folder's
config.yaml), a 50 MB file, 5,000 levels of nesting (YAML flow and block, JSON).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.engine_helpers import small_config, write_config
from vqbench.bounded import LIMITS, Limits, _YamlCost, check_json, check_yaml, json_depth
from vqbench.cli import main
from vqbench.errors import VQBenchError
from vqbench.files import read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
QUICK_S = 5.0  # what the slowest refusal may take (they measure well under 1 s)


def laughs(levels: int = 9, width: int = 10) -> str:
    """`levels` anchors, each a list of `width` aliases of the one before: width^levels nodes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def nested_flow(levels: int) -> str:
    return "a: " + "[" * levels + "1" + "]" * levels + "\n"


def nested_block(levels: int) -> str:
    """Block sequences in compact form: `a:\n  - - - 1` nests one level per dash."""
    return "a:\n  " + "- " * levels + "1\n"


# ---- the counts against brute force ------------------------------------------------------------
def expanded(node: yaml.Node) -> tuple[int, int]:
    """(nodes, height) of a composed node with every alias expanded (aliases are shared nodes)."""
    if isinstance(node, yaml.ScalarNode):
        return 1, 0
    children = (
        [c for pair in node.value for c in pair]
        if isinstance(node, yaml.MappingNode)
        else node.value
    )
    counts = [expanded(c) for c in children]
    return 1 + sum(n for n, _ in counts), 1 + max((h for _, h in counts), default=0)


def random_yaml(rng: random.Random) -> str:
    """A random document of nested mappings and lists with anchors and aliases."""
    anchors: list[str] = []

    def value(depth: int) -> str:
        roll = rng.random()
        if anchors and roll < 0.25:
            return f"*{rng.choice(anchors)}"
        if depth > 3 or roll < 0.45:
            return rng.choice(["1", "x", "'a b'", "[]", "{}"])
        items = [value(depth + 1) for _ in range(rng.randint(1, 4))]
        text = (
            "[" + ", ".join(items) + "]"
            if roll < 0.7
            else "{" + ", ".join(f"k{i}: {v}" for i, v in enumerate(items)) + "}"
        )
        if rng.random() < 0.4:
            name = f"a{len(anchors)}"
            text = f"&{name} {text}"
            anchors.append(name)  # usable by later siblings, never by its own children
        return text

    return "\n".join(f"top{i}: {value(0)}" for i in range(rng.randint(1, 5))) + "\n"


def test_yaml_counts_match_the_expanded_graph():
    rng = random.Random(0)
    for _ in range(300):
        text = random_yaml(rng)
        cost = _YamlCost("x", Limits(nodes=10**9, aliases=10**9, depth=10**9))
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            cost.event(event)
        nodes, height = expanded(yaml.compose(text, Loader=yaml.SafeLoader))
        assert cost.nodes == nodes, text
        # Depth limit: exactly at the height passes, one below is refused.
        check_yaml(text, "x", Limits(depth=height))
        with pytest.raises(VQBenchError, match="nesting depth passes the limit"):
            check_yaml(text, "x", Limits(depth=height - 1))
        if nodes > 1:
            with pytest.raises(VQBenchError, match="node count"):
                check_yaml(text, "x", Limits(nodes=nodes - 1))


def test_hand_worked_billion_laughs_counts():
    # 3 levels of width 2: l0 = 1 + 2, l1 = 1 + 2 * 3, l2 = 1 + 2 * 7; plus the top mapping,
    # its 3 keys: 1 + 3 + 3 + 7 + 15 = 29.
    cost = _YamlCost("x", LIMITS)
    for event in yaml.parse(laughs(3, 2), Loader=yaml.SafeLoader):
        cost.event(event)
    assert (cost.nodes, cost.aliases) == (29, 4)


def json_height(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(json_height, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_height, value), default=0)
    return 0


def test_json_depth_matches_the_parsed_value():
    rng = random.Random(1)
    tricky = ['"]', '"[[{', 'a\\"[', "\\\\", "}}", "x"]

    def value(depth: int):
        roll = rng.random()
        if depth > 5 or roll < 0.3:
            return rng.choice([1, None, rng.choice(tricky)])
        items = [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return (
            items if roll < 0.65 else {rng.choice(tricky) + str(i): v for i, v in enumerate(items)}
        )

    for _ in range(300):
        data = value(0)
        assert json_depth(json.dumps(data)) == json_height(data)


# ---- each family, through the command that reads it -------------------------------------------
def files_under(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def refused(capsys, args: list[str], message: str, watched: Path) -> None:
    """`vqbench ARGS` exits 2 quickly with one line holding `message` and writes nothing."""
    before = files_under(watched)
    start = time.perf_counter()
    assert main(args) == 2
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert files_under(watched) == before
    assert elapsed < QUICK_S, f"took {elapsed:.1f} s"


HOSTILE = {
    "billion laughs": (laughs(), "node count with aliases expanded passes the limit of 100,000"),
    "many aliases": (
        "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n",
        "alias count passes the limit of 1,000",
    ),
    "5,000 levels (flow)": (nested_flow(5000), "nesting depth passes the limit of 100"),
    "5,000 levels (block)": (nested_block(5000), "nesting depth passes the limit of 100"),
}


def huge(path: Path, size: int = 50 * 2**20) -> Path:
    """A 50 MB config (sparse: it costs no disk)."""
    path.write_text("name: x\n")
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


@pytest.mark.parametrize("family", list(HOSTILE))
def test_a_hostile_run_config(tmp_path, capsys, family):
    text, message = HOSTILE[family]
    (tmp_path / "bad.yaml").write_text(text)
    args = ["train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "run")]
    refused(capsys, args, message, tmp_path)
    assert not (tmp_path / "run").exists()


def test_a_50_mb_config(tmp_path, capsys):
    path = huge(tmp_path / "big.yaml")
    args = ["train", str(path), "--out", str(tmp_path / "run")]
    refused(capsys, args, "is 50 MiB, over the limit of 1 MiB", tmp_path)


@pytest.mark.parametrize("family", ["billion laughs", "5,000 levels (flow)", "50 MB"])
def test_a_hostile_suite(tmp_path, capsys, family):
    suite = (ROOT / "suites" / "tiny.yaml").read_text()
    path = tmp_path / "suite.yaml"
    if family == "50 MB":
        huge(path)
        message = "over the limit of 1 MiB"
    else:
        text, message = HOSTILE[family]
        path.write_text(suite + text)
    args = ["run", str(path), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r")]
    refused(capsys, args, message, tmp_path)


def test_a_hostile_config_yaml_in_a_run_folder(tmp_path, capsys):
    step = tmp_path / "run" / "checkpoints" / "step-00000001"
    step.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(laughs())
    refused(capsys, ["eval", str(step)], "node count with aliases expanded", tmp_path)


def test_a_report_rebuilt_from_a_deep_or_huge_eval_json(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(ROOT / "suites" / "tiny.yaml", runs / "suite.yaml")
    run = runs / "vanilla-s0"
    run.mkdir()
    (run / "eval.json").write_text("[" * 5000 + "]" * 5000)
    args = ["report", str(runs), "--results", str(tmp_path / "results")]
    refused(capsys, args, "nesting depth (5,000) passes the limit of 100", tmp_path)
    huge(run / "eval.json", 65 * 2**20)
    refused(capsys, args, "is 65 MiB, over the limit of 64 MiB", tmp_path)


def test_records_within_bounds_and_a_deep_log_line(tmp_path):
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"a": [[[1]]]}))
    assert read_json(path) == {"a": [[[1]]]}
    with pytest.raises(VQBenchError, match="nesting depth"):
        check_json("{" + '"a":{' * 200 + "}" * 201, "x.json")
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n' + "[" * 5000 + "]" * 5000 + '\n{"step": 2}\n')
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]  # the deep line is skipped as damaged


def test_real_files_are_far_below_the_limits(tmp_path):
    for path in [*ROOT.glob("suites/*.yaml"), *ROOT.glob("configs/**/*.yaml")]:
        text = path.read_text()
        cost = _YamlCost(path, LIMITS)
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            cost.event(event)
        assert cost.nodes * 10 < LIMITS.nodes and len(text) * 10 < LIMITS.yaml_bytes, path
    good = write_config(tmp_path / "ok.yaml", small_config())
    check_yaml(good.read_text(), good)
