"""The quantizer step quiet and beside a competing CPU-bound process, against the library.

For each explicit quantizer that vector-quantize-pytorch (v-q-p) also has, one test times four
steps per round, interleaved so that both implementations see the same machine: ours quiet,
v-q-p quiet, then, with the competitor running, ours loaded and v-q-p loaded. The competitor
is one process doing float32 matmuls with as many torch threads as there are cores (what
another training run on the machine does); between the loaded halves it is stopped
(SIGSTOP), so its start-up is paid once. `extra_info` keeps every round's seconds; the table
(`write_results.py`, "Under load") shows the medians and the per-round ratios v-q-p / ours.

Rounds: `VQBENCH_LOAD_ROUNDS` (default 3). Nothing here asserts a time.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

import pytest
import torch
from cases import build_step

TOKENS, DIM, SIZE = 8192, 128, 65536
METHODS = ("vanilla", "ema", "simvq")
ROUNDS = int(os.environ.get("VQBENCH_LOAD_ROUNDS", "3"))
#: Ends by itself when the benchmark's process is gone (killed or crashed), so that no orphan
#: keeps loading the machine: its parent id changes then.
COMPETITOR = (
    "import os, torch\n"
    "torch.set_num_threads({threads})\n"
    "a = torch.randn(1024, 1024)\n"
    "while os.getppid() == {parent}:\n"
    "    a = torch.tanh(a @ a)\n"
)


@pytest.fixture(scope="module")
def competitor():
    """A CPU-bound process, stopped until a loaded half resumes it."""
    code = COMPETITOR.format(threads=os.cpu_count() or 1, parent=os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(3)  # torch imported, loop running
    proc.send_signal(signal.SIGSTOP)
    yield proc
    proc.kill()
    proc.wait()


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


@pytest.mark.parametrize("method", METHODS)
def test_step_under_load(benchmark, competitor, method):
    device = torch.device("cpu")
    steps = {
        impl: build_step(impl, method, SIZE, TOKENS, DIM, {}, device)
        for impl in ("vqbench", "vqtorch")
    }
    for step in steps.values():  # warm-up
        step()
    seconds = {f"{impl}_{load}": [] for load in ("quiet", "loaded") for impl in steps}
    loadavg = []  # the machine's 1-minute load average before each round (other jobs too)

    def one_round():
        loadavg.append(os.getloadavg()[0])
        for load in ("quiet", "loaded"):
            competitor.send_signal(signal.SIGCONT if load == "loaded" else signal.SIGSTOP)
            if load == "loaded":
                time.sleep(0.5)  # the competitor back at full speed
            for impl, step in steps.items():
                seconds[f"{impl}_{load}"].append(timed(step))
        competitor.send_signal(signal.SIGSTOP)

    benchmark.group = f"{SIZE} codes, under load"
    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(
        {
            "impl": "under-load",
            "method": method,
            "codebook_size": SIZE,
            "tokens": TOKENS,
            "dim": DIM,
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "competitor_threads": os.cpu_count(),
            "round_seconds": seconds,
            "loadavg": loadavg,
            "median": {k: statistics.median(v) for k, v in seconds.items()},
        }
    )
