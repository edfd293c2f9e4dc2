"""Shards read over http (a local http.server) and through a ``pipe:`` command equal local reads."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from datamodules.format import PoseSequence, encode_sample
from datamodules.video_datamodule import VideoPoseDataModule


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(0)
    for s in range(2):
        with wds.TarWriter(str(root / f"train-{s:06d}.tar")) as writer:
            for i in range(2):
                frames = rng.integers(0, 256, (12, 32, 24, 3), dtype=np.uint8)
                body = rng.uniform(0.2, 0.8, (12, 20, 3)).astype(np.float32)
                hands = rng.uniform(0.2, 0.8, (12, 2, 21, 3)).astype(np.float32)
                writer.write(encode_sample(f"h{s}_{i}", frames, 8.0, PoseSequence(body, hands), {}))
    return root


@pytest.fixture(scope="module")
def server(shard_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shard_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def batches(spec: str) -> tuple[list[dict], dict[str, int]]:
    dm = VideoPoseDataModule(spec, num_frames=4, height=32, width=24, batch_size=2, seed=5)
    return list(dm.train_dataloader()), dm.skip_counts()


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) == 2  # 4 videos, batch 2
    for x, y in zip(a, b):
        assert x.key == y.key
        assert all(
            torch.equal(getattr(x, k), getattr(y, k)) for k in ("video", "pose", "ref_image", "ref_pose")
        )


@pytest.mark.skipif(shutil.which("curl") is None, reason="webdataset reads http(s) URLs with curl")
def test_http_shards(shard_dir, server):
    local, _ = batches(str(shard_dir / "train-{000000..000001}.tar"))
    remote, skipped = batches(server + "/train-{000000..000001}.tar")
    assert_same(remote, local)
    assert skipped == {}
    # The third shard is a 404: curl -f exits 22 after sending nothing. Whether the tar reader
    # first sees an empty stream or the exit status depends on timing; either way it is one
    # failed shard, counted once, as the command's failure.
    missing, skipped = batches(server + "/train-{000000..000002}.tar")
    assert sorted(k for b in missing for k in b.key) == sorted(k for b in local for k in b.key)
    assert skipped == {"read_error": 1}


def test_pipe_shards(shard_dir):
    local, _ = batches(str(shard_dir / "train-{000000..000001}.tar"))
    piped, skipped = batches(f"pipe:cat {shard_dir}/train-{{000000..000001}}.tar")
    assert_same(piped, local)
    assert skipped == {}
