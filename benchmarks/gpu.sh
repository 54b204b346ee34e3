#!/usr/bin/env bash
# All the GPU work of issue 15 on one CUDA machine: `bash benchmarks/gpu.sh all`, or one part at a
# time, each under 10 minutes on one H100 (the device tool's limit per command):
#
#   bash benchmarks/gpu.sh tests   # pytest -m cuda (tests/cuda): $OUT/pytest-cuda.log and .xml
#   bash benchmarks/gpu.sh smoke   # suites/gpu-smoke.yaml -> results/gpu-smoke.md, .json, plots
#   bash benchmarks/gpu.sh bench   # GPU benchmarks -> benchmarks/results-gpu.json, RESULTS.md
#
# Each part first runs `setup`: it installs the wheels in .whl/ if there are any
# (`benchmarks/gpu_wheels.sh` downloads them where pip reaches PyPI) into /tmp/site, then vqbench
# itself, editable and without dependencies. Results are written in the working tree and packed
# into $OUT (default gpu-out/), which the device tool brings back:
# gpu-smoke.tar.gz and bench.tar.gz unpack at the repository root. (To check the script itself
# on a CPU: GPU_SH_ALLOW_CPU=1 SMOKE_SUITE=<a small copy of the suite> bash benchmarks/gpu.sh smoke.)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 VQBENCH_OFFLINE=1

setup() {
    if compgen -G ".whl/*.whl" >/dev/null && [ ! -f /tmp/site/.vqbench-wheels ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        touch /tmp/site/.vqbench-wheels
    fi
    if [ -d /tmp/site ]; then
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if ! "$PY" -c "import vqbench_quantizers" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
    fi
    "$PY" - <<'PYEOF'
import os, platform, torch, vqbench
from vqbench.quantizer import list_quantizers
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"vqbench {vqbench.__version__}, torch {torch.__version__}, Python "
      f"{platform.python_version()}, {name}; quantizers: {', '.join(list_quantizers())}")
if not torch.cuda.is_available() and os.environ.get("GPU_SH_ALLOW_CPU") != "1":
    raise SystemExit("gpu.sh: no CUDA device here")
PYEOF
}

tests() {
    local parallel=()
    if "$PY" -c "import xdist" 2>/dev/null; then parallel=(-n 4); fi
    "$PY" -m pytest -m cuda tests/cuda -p no:cacheprovider -q -rs "${parallel[@]}" \
        --junitxml="$OUT/pytest-cuda.xml" 2>&1 | tee "$OUT/pytest-cuda.log"
}

smoke() {
    # One run at a time, so that a run that would not fit in the time left is not started;
    # the report then covers the runs that finished (rerun to add the rest: finished runs are
    # skipped).
    local runs=/tmp/vqbench-runs deadline=$((SECONDS + ${SMOKE_SECONDS:-520}))
    local suite="${SMOKE_SUITE:-suites/gpu-smoke.yaml}" names
    names=$("$PY" -c "import sys, yaml; print(' '.join(r['name'] for r in \
        yaml.safe_load(open(sys.argv[1]))['runs']))" "$suite")
    for name in $names; do
        if [ $((deadline - SECONDS)) -lt 75 ]; then
            echo "gpu.sh: not enough time left for run '$name'" | tee -a "$OUT/smoke.log"
            continue
        fi
        "$PY" -m vqbench run "$suite" --only "$name" --out "$runs" \
            --results results 2>&1 | tee -a "$OUT/smoke.log"
    done
    "$PY" -m vqbench report "$runs/gpu-smoke" --results results | tee -a "$OUT/smoke.log"
    tar czf "$OUT/gpu-smoke.tar.gz" results/gpu-smoke*
}

bench() {
    "$PY" -m pytest benchmarks -p no:cacheprovider -o addopts= -q --benchmark-only \
        --benchmark-json=benchmarks/results-gpu.json --ignore=benchmarks/test_estimators.py \
        2>&1 | tee "$OUT/bench.log"
    "$PY" benchmarks/write_results.py benchmarks/results.json benchmarks/results-estimators.json \
        benchmarks/results-gpu.json | tee -a "$OUT/bench.log"
    tar czf "$OUT/bench.tar.gz" benchmarks/results-gpu.json benchmarks/RESULTS.md \
        benchmarks/RESULTS-gpu-*.png
}

case "${1:-all}" in
    setup) setup ;;
    tests) setup && tests ;;
    smoke) setup && smoke ;;
    bench) setup && bench ;;
    all)
        setup
        status=0
        tests || status=1
        SMOKE_SECONDS=100000 smoke || status=1
        bench || status=1
        exit $status
        ;;
    *) echo "usage: bash benchmarks/gpu.sh [setup|tests|smoke|bench|all]" >&2; exit 2 ;;
esac
