"""The gradient estimators alone: forward+backward on 8,192 tokens x dim 128.

Inside a quantizer step (about 1.3 s on 2 CPU cores at 65,536 codes) the estimator's share is
smaller than the run-to-run noise of the whole step, so its cost is measured here directly.
"""

import pytest
import torch

from vqbench import create_estimator

CASES = {
    "ste": {},
    "rotation": {},
    # A detached radius is the STE exactly (the value is the code): the radius stays live.
    "radius-clipped": {"radius": "clipped", "detach_radius": False},
    "diveq": {},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_estimator_forward_backward(benchmark, case):
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(8192, 128, generator=generator).requires_grad_()
    q, g = torch.randn(8192, 128, generator=generator), torch.randn(8192, 128, generator=generator)
    estimator = create_estimator(case.split("-")[0], **CASES[case])

    def step():
        z.grad = None
        (estimator(z, q) * g).sum().backward()

    benchmark.group = "estimator alone, 8192 x 128"
    benchmark.extra_info.update({"impl": "estimator", "method": case, "tokens": 8192, "dim": 128})
    benchmark.pedantic(step, rounds=20, warmup_rounds=3, iterations=1)
