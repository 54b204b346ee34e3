"""The CUDA tests (`pytest -m cuda`, `tox -e gpu`): skipped without a CUDA device.

`VQBENCH_CUDA_TEST_DEVICE=cpu pytest -m cuda tests/cuda` runs their device-independent parts
on CPU (a check of the tests themselves where no GPU is at hand); tests of what only CUDA has
(TF32 tensor cores, NCCL, the sync debug mode) still skip there.
"""

from __future__ import annotations

import os

import pytest
import torch

DEVICE = torch.device(os.environ.get("VQBENCH_CUDA_TEST_DEVICE", "cuda"))
ON_CUDA = DEVICE.type == "cuda"

needs_device = pytest.mark.skipif(
    ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA device"
)
needs_cuda = pytest.mark.skipif(not (ON_CUDA and torch.cuda.is_available()), reason="CUDA only")
