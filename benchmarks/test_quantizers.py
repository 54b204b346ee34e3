"""Forward+backward of every quantizer at the paper's scale, beside vector-quantize-pytorch.

Run with `tox -e bench` (or `pytest benchmarks --benchmark-only -o addopts=`); then
`python benchmarks/write_results.py benchmarks/results.json` writes `benchmarks/RESULTS.md`.
Time is measured in this process by pytest-benchmark; peak extra memory in a fresh process per
case (`measure.py`), and stored in each case's `extra_info`. Nothing here asserts a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cases import build_step

TOKENS, DIM = 8192, 128
SIZES = [1024, 8192, 65536, 262144]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PRECISIONS = ["fp32", "tf32", "bf16"] if DEVICE.type == "cuda" else ["fp32"]
MEASURE = Path(__file__).resolve().parent / "measure.py"


def case_list():
    cases = []
    for size in SIZES:
        cases.append(("floor", "matmul", size, {}))
        for method in ("vanilla", "ema", "simvq", "fc"):
            cases.append(("vqbench", method, size, {}))
        cases.append(("vqbench", "group_vq", size, {"groups": 64}))
    for groups in (1, 16, 1024):
        cases.append(("vqbench", "group_vq", 65536, {"groups": groups}))
    for method in ("vanilla", "simvq", "group_vq"):
        extra = {"groups": 64} if method == "group_vq" else {}
        cases.append(("vqbench", method, 65536, {**extra, "estimator": "rotation"}))
        cases.append(
            (
                "vqbench",
                method,
                65536,
                {
                    **extra,
                    "estimator": "radius",
                    "estimator_params": {"radius": "clipped", "detach_radius": False},
                },
            )
        )
    cases.append(("vqbench", "lfq", 65536, {}))
    cases.append(("vqbench", "fsq", 65536, {}))
    for method in ("nsvq", "transvq"):  # issue 24, at their paper's 8,192 codes
        cases.append(("vqbench", method, 8192, {}))
    for method in ("ema", "vanilla", "simvq", "lfq", "fsq"):
        cases.append(("vqtorch", method, 65536, {}))
    return cases + family_cases()


#: The families of issue 17, each beside vector-quantize-pytorch where it has the method
#: (same parameters, so that the tables pair them). Composites: 2 x 256 = 65,536 combinations.
FAMILIES = [
    ("residual", {"stages": 2, "quantizer_params": {"codebook_size": 256}}, True),
    ("product", {"parts": 2, "quantizer_params": {"codebook_size": 256}}, True),
    ("bsq", {}, True),
    ("ibq", {}, False),
    ("vanilla", {"restart_after": 1}, False),  # worst case: unused codes restart every step
    ("vanilla", {"estimator": "diveq"}, True),
    # issue 24: quantizing from the first step (the reference skips 999 steps as the identity)
    ("sf_diveq", {"skip_steps": 0, "average_steps": 0}, False),
    # QINCo's setting: 256 codes per stage (here 2 stages, as the residual row)
    # (the library's implicit ResidualVQ needs about 17 GiB here: measured at 512 tokens only)
    (
        "residual",
        {"stages": 2, "implicit_codebook": "mlp", "quantizer_params": {"codebook_size": 256}},
        False,
    ),
]
#: The 2025-26 quantizers of issue 24 at the paper's scale (Leech: one 24-channel group of
#: 196,560 codes, the 128 channels projected to 24; FSP: FSQ's 65,536 levels).
FAMILIES_2025 = [
    ("leech", {}, False),
    ("fsp", {}, False),
]


def family_cases():
    cases = []
    for method, params, in_library in FAMILIES + FAMILIES_2025:
        cases.append(("vqbench", method, 65536, params))
        if in_library:
            cases.append(("vqtorch", method, 65536, params))
    return cases + paper_scale_cases()


#: Issue 24's methods at their papers' codebook sizes, beside vector-quantize-pytorch where it
#: has the method: (method, params, sizes, sizes also run by the library). The library holds
#: the N x K distances (about 12 GiB at 65,536 codes on CPU), so it runs at the smaller size.
PAPER_SCALE = [
    ("vqbridge", {}, (16384, 262144), (16384,)),  # FVQ-16384 (QBridge-L/4), FVQ-262144 (L/8)
]


def paper_scale_cases():
    cases = []
    for method, params, sizes, library_sizes in PAPER_SCALE:
        cases += [("vqbench", method, size, params) for size in sizes]
        cases += [("vqtorch", method, size, params) for size in library_sizes]
    return cases


def _flat(params: dict) -> dict:
    """Nested parameters (a composite's quantizer_params) flattened for case ids."""
    flat = {}
    for k, v in params.items():
        flat.update(_flat(v) if isinstance(v, dict) else {k: v})
    return flat


def case_id(case):
    impl, method, size, params = case
    kept = {k: v for k, v in params.items() if k != "estimator_params"}
    extra = "".join(f"-{k}{v}" for k, v in _flat(kept).items())
    return f"{impl}-{method}{extra}-{size}"


def device_name() -> str:
    return torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"


def synchronised(step):
    """On CUDA the step returns before the GPU is done: time it to the end of its work."""
    if DEVICE.type != "cuda":
        return step

    def step_and_wait():
        step()
        torch.cuda.synchronize()

    return step_and_wait


def peak_extra_memory(impl, method, size, params, precision) -> float:
    if DEVICE.type == "cuda":  # the allocator's peak is per process and can be reset
        from measure import measure

        result = measure(impl, method, size, TOKENS, DIM, params, DEVICE, 1, precision)
        return result["peak_extra_mib"]
    cmd = [
        sys.executable,
        str(MEASURE),
        "--impl",
        impl,
        "--method",
        method,
        "--codebook-size",
        str(size),
        "--tokens",
        str(TOKENS),
        "--dim",
        str(DIM),
        "--device",
        DEVICE.type,
        "--precision",
        precision,
        "--repeats",
        "1",
    ]
    for key, value in params.items():
        cmd += ["--param", f"{key}={json.dumps(value)}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_extra_mib"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", case_list(), ids=case_id)
def test_forward_backward(benchmark, case, precision):
    impl, method, size, params = case
    if impl == "floor" and size > 65536:
        pytest.skip("the floor at 262,144 codes would hold an 8 GiB product; see RESULTS.md")
    step = build_step(impl, method, size, TOKENS, DIM, params, DEVICE, precision)
    slow = impl == "vqtorch" and DEVICE.type == "cpu"
    benchmark.group = f"{size} codes, {precision}"
    benchmark.extra_info.update(
        {
            "impl": impl,
            "method": method,
            "codebook_size": size,
            "params": params,
            "tokens": TOKENS,
            "dim": DIM,
            "device": DEVICE.type,
            "device_name": device_name(),
            "precision": precision,
            "threads": torch.get_num_threads(),
        }
    )
    benchmark.pedantic(
        synchronised(step),
        rounds=1 if slow else 3,
        warmup_rounds=1,
        iterations=1 if DEVICE.type == "cpu" else 10,
    )
    del step
    benchmark.extra_info["peak_extra_mib"] = peak_extra_memory(
        impl, method, size, params, precision
    )
