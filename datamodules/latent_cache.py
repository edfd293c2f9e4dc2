"""Latent-cache shards: VAE latents and CLIP embeddings computed once, so training skips the encoders.

A cache sample keeps the source sample's ``pose.npz`` and ``json`` and replaces the ``mp4`` by
``latents.npy`` (f, c, H/d, W/d with d the VAE's downsampling, recorded in the ``json``: the scaled
posterior mean of every frame at the training size) and ``clip.npy`` (f, d: the CLIP image
embedding of every frame, any of which can be the reference). Frames are resized with the
deterministic transform the DataModule applies (``center_crop`` or ``stretch``), so the poses it
renders line up. Read them with ``VideoPoseDataModule(use_latent_cache=True)``.

With ``frames=True`` a sample also keeps ``frames.npy``: the frames at the training size as the
loader's packed YUV 4:2:0 uint8 planes (f, 3H/2, W; their colour code in the ``json``), so a
denoiser with the pixel local-image stream trains from the cache too (it sees the clip's first
frame). At 64x48 that is 4.6 kB a frame; at 768x512, 590 kB (12x the float16 latents).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import webdataset as wds
from tqdm import tqdm

from datamodules.clips import apply_box_yuv420, crop_box
from datamodules.format import decode_mp4_yuv420
from datamodules.stream import SkipSample, expand_shards
from datamodules.video_datamodule import pixels_to_float
from unianimate.errors import InputError
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
    frames: bool = False,
) -> dict:
    """One shard sample (``mp4``, ``pose.npz``, ``json``) -> its cache sample."""
    # The training loader's path (4:2:0 planes, even crop, the device conversion): the same pixels.
    try:
        decoded = decode_mp4_yuv420(sample["mp4"])
    except Exception as exn:  # the training stream skips such a sample too
        raise SkipSample("bad_video", repr(exn)) from exn
    box = crop_box(*decoded.y.shape[1:], height, width, resize, np.random.default_rng(0), even=True)
    planes = apply_box_yuv420(decoded, box)
    video = pixels_to_float(torch.from_numpy(planes).to(device)[None], torch.tensor([decoded.colour]))
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
    out = {
        "__key__": sample["__key__"],
        "pose.npz": sample["pose.npz"],
        "latents.npy": _npy(latents.cpu().numpy().astype(dtype)),
        "clip.npy": _npy(embeds.cpu().numpy().astype(dtype)),
    }
    if frames:
        meta["latent_cache"]["colour"] = decoded.colour
        out["frames.npy"] = _npy(planes)
    return {**out, "json": json.dumps(meta).encode()}


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
    frames: bool = False,
) -> list[Path]:
    """Encode every sample of ``shards`` into cache shards ``out_dir/cache-%06d.tar`` (``frames``:
    keep the frames too, for the local-image stream)."""
    if resize not in ("center_crop", "stretch"):
        raise ValueError(f"the cache needs a deterministic resize (center_crop or stretch), got {resize!r}")
    if encoders.sample_posterior:
        raise ValueError(
            "build the cache with FrozenEncoders(sample_posterior=False): it stores the posterior mean"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoders.to(device)
    written, skipped, cached = [], Counter(), 0

    def bad_tar(exn: Exception) -> bool:
        skipped["bad_tar"] += 1
        return True  # go on with the next shard

    with wds.ShardWriter(str(out / "cache-%06d.tar"), maxsize=max_shard_bytes, verbose=0) as writer:
        urls = expand_shards(shards, "train_shards")
        dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False, handler=bad_tar)
        for sample in tqdm(dataset, desc="latent cache", unit="video", disable=not progress):
            if "mp4" not in sample or "pose.npz" not in sample:
                skipped["missing_video"] += 1  # nothing to encode; the training stream skips it too
                continue
            try:
                writer.write(
                    cache_sample(sample, encoders, height, width, resize, np.dtype(dtype), device, frames)
                )
                cached += 1
            except SkipSample as skip:
                skipped[skip.reason] += 1
        written = [Path(p) for p in sorted(out.glob("cache-*.tar"))]
    counts = ", ".join(f"{reason}={n}" for reason, n in sorted(skipped.items()))
    if cached == 0:
        raise InputError(
            f"train_shards: no sample of '{shards}' could be cached (skipped: {counts or 'none'})"
        )
    if skipped:
        print(f"latent cache: {sum(skipped.values())} samples skipped ({counts})")
    return written


def encoders_fingerprint(encoders: FrozenEncoders) -> str:
    """sha256 of the frozen encoders' weights and latent scale: a cache made with others is stale."""
    digest = hashlib.sha256(repr(float(encoders.scaling_factor)).encode())
    for name, tensor in sorted(encoders.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ensure_latent_cache(
    source: str,
    out_dir: str | Path,
    encoders: FrozenEncoders,
    height: int,
    width: int,
    resize: Literal["center_crop", "stretch"] = "center_crop",
    device: str | torch.device = "cpu",
) -> Path:
    """The cache of the local pixel shards ``source`` in ``out_dir``, frames kept, built unless one
    of the same shards (names, sizes, modification times), size and encoder weights is there.

    The encoders' posterior means are stored whatever their ``sample_posterior``. A new cache is
    written beside ``out_dir`` and moved into place with its ``manifest.json``: an interrupted build
    leaves no cache that looks finished.
    """
    shards = [Path(url) for url in expand_shards(source, "train_shards")]
    if not all(p.is_file() for p in shards):
        raise ValueError(f"a latent cache is made of local shard files, got '{source}'")
    wanted = {
        "source": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in shards],
        "height": height,
        "width": width,
        "resize": resize,
        "frames": True,
        "encoders": encoders_fingerprint(encoders),
    }
    out = Path(out_dir)
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        return out
    staging = out.with_name(out.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    sample_posterior, encoders.sample_posterior = encoders.sample_posterior, False
    try:
        build_latent_cache(
            "::".join(str(p) for p in shards),
            staging,
            encoders,
            height,
            width,
            resize,
            device=device,
            frames=True,
        )
    finally:
        encoders.sample_posterior = sample_posterior
    (staging / "manifest.json").write_text(json.dumps(wanted, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out
