"""benchmarks/write_results.py renders a GPU section from CUDA rows (synthetic numbers), and
leaves the CPU part as it was."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent


def bench(extra: dict, seconds: float) -> dict:
    return {"extra_info": extra, "stats": {"median": seconds, "rounds": 3}}


def gpu_rows() -> list[dict]:
    cuda = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "tokens": 8192, "dim": 128,
            "threads": 16, "peak_extra_mib": 300.0}  # fmt: skip
    rows = []
    for precision, floor in (("fp32", 0.0039), ("tf32", 0.0010), ("bf16", 0.00049)):
        base = {**cuda, "precision": precision, "codebook_size": 65536}
        rows.append(bench({**base, "impl": "floor", "method": "matmul", "params": {}}, floor))
        rows.append(bench({**base, "impl": "vqbench", "method": "ema", "params": {}}, 0.005))
        rows.append(bench({**base, "impl": "vqtorch", "method": "ema", "params": {}}, 0.0241))
        for search, seconds in (("tf32", 0.0024), ("bf16", 0.0015)):
            params = {"search_precision": search}
            rows.append(bench({**base, "impl": "vqbench-certified", "method": "ema",
                               "params": params, "search_precision": search,
                               "fallback_fraction": 0.001}, seconds))  # fmt: skip
    step = {**cuda, "impl": "training-step", "batch": 32, "resolution": 128, "precision": "bf16",
            "codebook_size": 65536}  # fmt: skip
    rows.append(bench({**step, "quantizer_impl": "none", "method": "none", "params": {}}, 0.0938))
    rows.append(bench({**step, "quantizer_impl": "vqbench", "method": "ema", "params": {}}, 0.098))
    rows.append(bench({**step, "quantizer_impl": "vqbench", "method": "ema",
                       "params": {"search_precision": "tf32"}}, 0.0955))  # fmt: skip
    rows.append(bench({**step, "quantizer_impl": "vqtorch", "method": "ema", "params": {}}, 0.12))
    rows.append(bench({**cuda, "impl": "engine-overhead", "method": "group_vq", "preset": "vqgan",
                       "resolution": 128, "batch": 32, "precision": "bf16",
                       "engine_images_per_s": 330.0, "bare_images_per_s": 340.0,
                       "ratio": 330 / 340}, 10.0))  # fmt: skip
    return rows


def test_gpu_section_and_unchanged_cpu_part(tmp_path):
    cpu = json.loads((BENCHMARKS / "results.json").read_text())
    gpu = copy.deepcopy(cpu)
    gpu["benchmarks"] = gpu_rows()
    (tmp_path / "results-gpu.json").write_text(json.dumps(gpu))
    out = tmp_path / "RESULTS.md"
    files = [str(BENCHMARKS / "results.json"), str(BENCHMARKS / "results-estimators.json")]
    cmd = [sys.executable, str(BENCHMARKS / "write_results.py"), *files]
    subprocess.run([*cmd, "--out", str(tmp_path / "cpu.md")], check=True, capture_output=True)
    subprocess.run([*cmd, str(tmp_path / "results-gpu.json"), "--out", str(out)], check=True,
                   capture_output=True)  # fmt: skip
    text = out.read_text()
    cpu_part = (tmp_path / "cpu.md").read_text()
    assert text.startswith(cpu_part.split("Written by")[0])
    assert cpu_part.split("## 65,536 codes, fp32")[1] in text  # the CPU tables, unchanged
    gpu_part = text.split("# GPU: NVIDIA H100 80GB HBM3")[1]
    for heading in ("## 65,536 codes, fp32", "## 65,536 codes, tf32", "## 65,536 codes, bf16",
                    "### Certified TF32 / bf16 search (bf16 context)",
                    "## The quantizer's share of a full `vqgan` training step",
                    "## Engine overhead"):  # fmt: skip
        assert heading in gpu_part, heading
    assert "| ema         | 5.00" in gpu_part  # milliseconds on the GPU
    assert "4.8x" in gpu_part and "4x: yes" in gpu_part  # 24.1 / 5.0 against the 4x target
    assert "| ema         | 5.00             | 2.40" in gpu_part  # fp32, TF32 search in ms
    assert "10.0x (8x: yes)" in gpu_part  # 24.1 / 2.4 against the TF32 target
    assert "4.3%" in gpu_part and "< 6%: yes" in gpu_part  # (98 - 93.8) / 98
    assert "1.8%" in gpu_part and "< 3%: yes" in gpu_part  # (95.5 - 93.8) / 95.5
    assert "0.971: yes" in gpu_part


def test_under_load_table_pairs_rounds():
    """Hand-worked: ratios per round v-q-p / vqbench, medians, range, the loaded verdict."""
    sys.path.insert(0, str(BENCHMARKS))
    from write_results import under_load_table

    seconds = {
        "vqbench_quiet": [1.0, 2.0, 1.0],
        "vqtorch_quiet": [3.0, 3.0, 2.0],  # ratios 3, 1.5, 2
        "vqbench_loaded": [2.0, 4.0, 5.0],
        "vqtorch_loaded": [4.0, 2.0, 10.0],  # ratios 2, 0.5, 2: behind in one round
    }
    row = {"impl": "under-load", "method": "simvq", "round_seconds": seconds,
           "median": {k: sorted(v)[1] for k, v in seconds.items()}}  # fmt: skip
    table = under_load_table([row])
    line = table.splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["simvq", "1.00", "3.00", "2.0x (1.5-3.0)", "4.00", "4.00",
                     "2.0x (0.5-2.0)", "4.0x", "1.3x", "**no**"]  # fmt: skip
