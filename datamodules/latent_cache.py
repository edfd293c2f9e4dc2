"""Latent-cache shards: VAE latents and CLIP embeddings computed once, so training skips the encoders.

A cache sample keeps the source sample's ``pose.npz`` and ``json`` and replaces the ``mp4`` by
``latents.npy`` (f, c, H/d, W/d with d the VAE's downsampling, recorded in the ``json``: the scaled
posterior mean of every frame at the training size) and ``clip.npy`` (f, d: the CLIP image
embedding of every frame, any of which can be the reference). Frames are resized with the
deterministic transform the DataModule applies (``center_crop`` or ``stretch``), so the poses it
renders line up. Read them with ``VideoPoseDataModule(use_latent_cache=True)``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import webdataset as wds
from tqdm import tqdm

from datamodules.clips import apply_box_yuv420, crop_box
from datamodules.format import decode_mp4_yuv420
from datamodules.stream import expand_shards
from datamodules.video_datamodule import pixels_to_float
from unianimate.models.frozen import FrozenEncoders


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@torch.no_grad()
def cache_sample(
    sample: dict,
    encoders: FrozenEncoders,
    height: int,
    width: int,
    resize: Literal["center_crop", "stretch"] = "center_crop",
    dtype: np.dtype = np.float16,
    device: str | torch.device = "cpu",
) -> dict:
    """One shard sample (``mp4``, ``pose.npz``, ``json``) -> its cache sample."""
    # The training loader's path (4:2:0 planes, even crop, the device conversion): the same pixels.
    frames = decode_mp4_yuv420(sample["mp4"])
    box = crop_box(*frames.y.shape[1:], height, width, resize, np.random.default_rng(0), even=True)
    packed = torch.from_numpy(apply_box_yuv420(frames, box)).to(device)[None]
    video = pixels_to_float(packed, torch.tensor([frames.colour]))
    pixels = video[0].transpose(0, 1).contiguous()  # f 3 H W in [-1, 1]
    latents = encoders.encode_images(pixels)  # f 4 h w, posterior mean when sample_posterior=False
    embeds = torch.cat([encoders.encode_clip(chunk) for chunk in pixels.split(encoders.vae_chunk)])
    meta = json.loads(sample["json"])
    meta["latent_cache"] = {
        "height": height,
        "width": width,
        "resize": resize,
        "downsample": encoders.downsample_factor,  # 8 for SD's VAE, 4 for the demo autoencoder
    }
    return {
        "__key__": sample["__key__"],
        "pose.npz": sample["pose.npz"],
        "json": json.dumps(meta).encode(),
        "latents.npy": _npy(latents.cpu().numpy().astype(dtype)),
        "clip.npy": _npy(embeds.cpu().numpy().astype(dtype)),
    }


def build_latent_cache(
    shards: str,
    out_dir: str | Path,
    encoders: FrozenEncoders,
    height: int,
    width: int,
    resize: Literal["center_crop", "stretch"] = "center_crop",
    dtype: str = "float16",
    max_shard_bytes: int = 1 << 30,
    device: str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Encode every sample of ``shards`` into cache shards ``out_dir/cache-%06d.tar``."""
    if resize not in ("center_crop", "stretch"):
        raise ValueError(f"the cache needs a deterministic resize (center_crop or stretch), got {resize!r}")
    if encoders.sample_posterior:
        raise ValueError(
            "build the cache with FrozenEncoders(sample_posterior=False): it stores the posterior mean"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoders.to(device)
    written = []
    with wds.ShardWriter(str(out / "cache-%06d.tar"), maxsize=max_shard_bytes, verbose=0) as writer:
        dataset = wds.WebDataset(expand_shards(shards), shardshuffle=False, empty_check=False)
        for sample in tqdm(dataset, desc="latent cache", unit="video", disable=not progress):
            if "mp4" not in sample or "pose.npz" not in sample:
                continue  # nothing to encode; the training stream would skip it too
            writer.write(cache_sample(sample, encoders, height, width, resize, np.dtype(dtype), device))
        written = [Path(p) for p in sorted(out.glob("cache-*.tar"))]
    return written
