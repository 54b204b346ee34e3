"""Time and peak memory of one quantizer forward+backward, measured in a fresh process.

`python benchmarks/measure.py --impl vqbench --method group_vq --codebook-size 65536 \
    --param groups=64` prints one JSON line: seconds per step (median), peak extra memory in MiB
(CPU: peak resident memory over the level just before the first step; CUDA:
`max_memory_allocated` over the allocation before the first step), and the device.
The benchmarks call this once per case so that each case's memory is its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import build_step  # noqa: E402


def _status_kib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def current_rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0). `ru_maxrss` cannot be used: Linux keeps
    it across exec, so a child started by a large parent inherits the parent's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib() -> float:
    return _status_kib("VmHWM") / 1024


def measure(impl, method, codebook_size, tokens, dim, params, device, repeats, precision):
    step = build_step(impl, method, codebook_size, tokens, dim, params, device, precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = current_rss_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        extra = peak_rss_mib() - base
    return {
        "impl": impl,
        "method": method,
        "codebook_size": codebook_size,
        "tokens": tokens,
        "dim": dim,
        "params": params,
        "precision": precision,
        "device": str(device),
        "seconds": statistics.median(times),
        "times": times,
        "peak_extra_mib": extra,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impl", default="vqbench", choices=["vqbench", "vqtorch", "floor"])
    parser.add_argument("--method", default="vanilla")
    parser.add_argument("--codebook-size", type=int, default=65536)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--param", action="append", default=[], help="key=value (JSON value)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = {}
    for item in args.param:
        key, value = item.split("=", 1)
        params[key] = json.loads(value)
    result = measure(
        args.impl,
        args.method,
        args.codebook_size,
        args.tokens,
        args.dim,
        params,
        torch.device(args.device),
        args.repeats,
        args.precision,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
