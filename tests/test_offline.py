"""Without network: a dry run downloads nothing and is quick and quiet; a real run says once
what weights are missing and how to supply them, within seconds (issue 26, item 4)."""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.engine_helpers import small_config
from vqbench import VQBenchError, create_quantizer, list_quantizers
from vqbench.build import build_model, trainable_parameters
from vqbench.config import parse_run_config
from vqbench.pretrained import WeightsUnavailable, unreachable, weights_file

ROOT = Path(__file__).resolve().parents[1]

#: Imported at start-up by every Python process that has its folder on PYTHONPATH: each
#: attempt to resolve a name or open a connection is written to stderr and refused.
NO_NETWORK = textwrap.dedent(
    """
    import socket, sys

    def _refuse(*args, **kwargs):
        sys.stderr.write(f"NETWORK ATTEMPT {args[:2]}\\n")
        raise OSError(101, "Network is unreachable (no network in this test)")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.getaddrinfo = _refuse
    socket.create_connection = _refuse
    import faulthandler
    faulthandler.dump_traceback_later(240, exit=True)  # a hang shows where
    """
)


def offline_suite(tmp_path: Path) -> Path:
    """suites/table1.yaml with its data paths pointing at folders and files that exist."""
    text = (ROOT / "suites" / "table1.yaml").read_text()
    data = tmp_path / "data"
    for folder in ("imagenet/train", "imagenet/val", "coco/train2017", "coco/val2017"):
        (data / folder).mkdir(parents=True)
    (data / "imagenet" / "train_20.txt").write_text("n01440764/a.JPEG\n")
    path = tmp_path / "table1.yaml"
    path.write_text(text.replace("/data/", f"{data}/"))
    return path


@pytest.mark.parametrize("hub_offline", [True, False], ids=["HF_HUB_OFFLINE", "no-flag"])
def test_dry_run_of_table1_without_network_is_fast_and_quiet(tmp_path, hub_offline):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_NETWORK)
    env = {k: v for k, v in os.environ.items() if k not in ("VQBENCH_OFFLINE", "HF_HUB_OFFLINE")}
    env.update(PYTHONPATH=str(tmp_path / "site"), OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"))
    if hub_offline:
        env["HF_HUB_OFFLINE"] = "1"
    suite = offline_suite(tmp_path)
    cmd = [sys.executable, "-m", "vqbench", "run", str(suite), "--dry-run"]
    cmd += ["--out", str(tmp_path / "runs")]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warning, no retry, no attempt to reach a server
    row = next(line for line in proc.stdout.splitlines() if "| vqgan_lc-s0 " in line)
    assert row.rstrip(" |").endswith("64.14M")  # counted without the CLIP weights
    assert elapsed < 45, f"the dry run took {elapsed:.0f} s"  # it took 65 s and more before
    assert not (tmp_path / "runs").exists() and not (tmp_path / "hf").exists()


def test_parameters_counted_without_weights_equal_those_of_a_built_model():
    for name in list_quantizers():
        config = parse_run_config(small_config(name), "test")
        model = build_model(config)
        expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable_parameters(config) == expected, name


@pytest.fixture
def no_network(monkeypatch):
    """socket.create_connection refused; the attempts are counted."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("VQBENCH_OFFLINE", "HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return attempts


def test_a_missing_extractor_is_said_once_in_one_line_within_seconds(
    no_network, tmp_path, monkeypatch
):
    """vqgan_lc builds without its extractor's weights; initialising its codebook needs them:
    one connection attempt, then one line naming what is missing and how to supply it."""
    from huggingface_hub import constants
    from vqbench_quantizers import vqgan_lc

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    try:
        q = create_quantizer("vqgan_lc", codebook_size=16, dim=8, extractor="test_vit")
        assert q.features.shape[1] == 1000 and not no_network  # test_vit's head: 1000 classes
        start = time.monotonic()
        with pytest.raises(VQBenchError) as err:
            q.init_from_data([(torch.rand(2, 3, 32, 32) * 2 - 1, None)])
        message = str(err.value)
        assert "vqgan_lc.extractor='test_vit' needs pretrained weights" in message
        assert "cannot be reached" in message and "set extractor_weights" in message
        assert "\n" not in message and len(no_network) == 1
        again = create_quantizer("vqgan_lc", codebook_size=16, dim=8, extractor="test_vit")
        with pytest.raises(VQBenchError, match="needs pretrained weights"):
            again.init_from_data([(torch.rand(2, 3, 32, 32) * 2 - 1, None)])
        assert len(no_network) == 1  # remembered: not tried again
        assert time.monotonic() - start < 10
    finally:
        vqgan_lc._MISSING_EXTRACTORS.clear()


def test_missing_metric_weights_are_not_downloaded_without_network(no_network, monkeypatch):
    from vqbench import pretrained

    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent/torch-hub")
    monkeypatch.setattr(pretrained, "_FAILED_DOWNLOADS", {})
    monkeypatch.delenv("VQBENCH_VGG16_WEIGHTS", raising=False)

    def never(*args, **kwargs):
        raise AssertionError("a download was attempted without network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", never)
    for _ in range(2):
        with pytest.raises(WeightsUnavailable, match="download.pytorch.org cannot be reached"):
            weights_file("vgg")
    assert len(no_network) == 1 and no_network[0][0] == "download.pytorch.org"


def test_unreachable_names_the_server_and_a_proxy_is_trusted(monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # nothing listens there now: refused at once
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    reason = unreachable(f"http://127.0.0.1:{port}/file")
    assert reason is not None and reason.startswith("127.0.0.1 cannot be reached")
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    try:
        assert unreachable(f"http://127.0.0.1:{listening.getsockname()[1]}/") is None
    finally:
        listening.close()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert unreachable(f"http://127.0.0.1:{port}/file") is None


def test_a_name_lookup_that_hangs_counts_as_unreachable_within_the_timeout(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)

    def hang(*args, **kwargs):  # a lookup that answers long after the timeout, with failure
        time.sleep(30)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    reason = unreachable("https://example.invalid/file", timeout=0.5)
    assert reason == "example.invalid cannot be reached: no answer within 0.5 s"
    assert time.monotonic() - start < 5
