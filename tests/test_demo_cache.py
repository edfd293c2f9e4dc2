"""The demo's ``.cache/unianimate`` paths resolve against the repository, whatever the working
directory; generated stand-ins are only ever written there, never at a path the user gave."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.video_datamodule import VideoPoseDataModule
from unianimate import demo_cache
from unianimate.errors import MissingInputError
from unianimate.models.frozen import FrozenEncoders

REPO = Path(__file__).resolve().parents[1]


def test_demo_paths_resolve_against_the_repository(tmp_path, monkeypatch):
    """Before: from another directory the demo regenerated its data and encoders under it."""
    monkeypatch.chdir(tmp_path)
    assert demo_cache.ROOT == REPO / ".cache" / "unianimate"
    assert demo_cache.resolve(".cache/unianimate/synthetic/train") == str(
        REPO / ".cache/unianimate/synthetic/train"
    )
    assert demo_cache.resolve("shards/train") == "shards/train"  # the user's own paths: as given
    # the shipped demo autoencoder is found from any folder
    assert demo_cache.resolve("assets/demo_vae") == str(REPO / "assets" / "demo_vae")
    (tmp_path / "assets").mkdir()
    assert demo_cache.resolve("assets") == "assets"  # one of the user's own, where it exists
    dm = VideoPoseDataModule(
        ".cache/unianimate/synthetic/train", synthetic_root=".cache/unianimate/synthetic"
    )
    assert dm.train_shards == str(REPO / ".cache/unianimate/synthetic/train")


def test_stand_in_encoders_are_made_in_the_demo_cache_only(tmp_path, monkeypatch):
    """Before: a misspelled path with make_tiny_if_missing silently got a random model."""
    monkeypatch.setattr(demo_cache, "ROOT", tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    FrozenEncoders(".cache/unianimate/tiny_clip", ".cache/unianimate/tiny_vae", make_tiny_if_missing=True)
    assert (tmp_path / "cache" / "tiny_clip" / "config.json").is_file()
    assert not (tmp_path / ".cache").exists()  # nothing under the working directory
    with pytest.raises(MissingInputError, match="clip_path: no CLIP model .* at 'weights/clip-vit-h'"):
        FrozenEncoders("weights/clip-vit-h", ".cache/unianimate/tiny_vae", make_tiny_if_missing=True)
    assert not (tmp_path / "weights").exists()


def test_synthetic_data_only_fills_synthetic_root(tmp_path):
    """A train_shards path outside synthetic_root that does not exist is an error, not a trigger
    to generate the demo dataset somewhere else."""
    dm = VideoPoseDataModule(str(tmp_path / "my_shards"), synthetic_root=str(tmp_path / "demo"))
    with pytest.raises(MissingInputError, match="train_shards: no shards at"):
        dm.prepare_data()
    assert not (tmp_path / "demo").exists()
