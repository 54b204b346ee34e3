#!/usr/bin/env bash
# Download, where pip reaches PyPI, the wheels of what vqbench needs that the GPU machine's image
# lacks (it has PyTorch, numpy, scipy, scikit-image, timm, pytest, pytest-benchmark, ... but
# not these; see /work/.library/device/KINDS.md), into .whl/ at the repository root (ignored
# by git; ~23 MB). The device tool carries them with `carry: [".whl"]`; `benchmarks/gpu.sh`
# installs them there. Python 3.12 on x86-64 manylinux, as the image is.
#
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(
    pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0
    lpips==0.1.4 torch-fidelity==0.4.0
    vector-quantize-pytorch==1.32.0 einx==0.4.3 einops==0.8.2 torch-einops-utils==0.2.0
    frozendict==2.5.1 loguru==0.7.3
    faiss-cpu==1.15.1
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "${PACKAGES[@]}"
du -sh .whl
