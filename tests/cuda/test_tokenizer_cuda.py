"""An exported tokenizer loaded onto CUDA (`Tokenizer.from_pretrained(DIR, device="cuda")`):
the same weights as on CPU, and encode/decode there agree with the CPU's (cuDNN may use TF32,
so a near tie may pick another code). Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch

from tests.cuda.conftest import DEVICE, needs_device
from vqbench import Tokenizer
from vqbench.tokenizer import FORMAT

pytestmark = [pytest.mark.cuda, needs_device]


@pytest.mark.parametrize("quantizer", ["simvq", "fsq"])
def test_a_saved_tokenizer_loads_and_runs_on_the_device(tmp_path, quantizer):
    params = {"simvq": {"codebook_size": 64, "dim": 16}, "fsq": {"levels": [5, 5, 4], "dim": 16}}
    torch.manual_seed(0)
    cpu = Tokenizer(
        model={"preset": "tiny", "overrides": {"ch": 16, "ch_mult": [1, 2]}},
        quantizer={"name": quantizer, "params": params[quantizer]},
        resolution=32,
        format=FORMAT,
    )
    cpu.save_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path, device=str(DEVICE))
    assert tok.device.type == DEVICE.type
    for key, value in cpu.state_dict().items():
        assert torch.equal(tok.state_dict()[key].cpu(), value), key
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    indices = tok.encode(x)
    assert indices.device.type == DEVICE.type
    agree = (indices.cpu() == cpu.encode(x)).float().mean().item()
    assert agree >= 0.95, agree
    decoded = tok.decode(indices)
    assert decoded.device.type == DEVICE.type
    torch.testing.assert_close(decoded.cpu(), cpu.decode(indices.cpu()), atol=2e-3, rtol=2e-3)
