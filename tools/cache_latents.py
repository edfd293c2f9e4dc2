"""Precompute VAE latents and CLIP embeddings of a shard set (the latent cache).

    python tools/cache_latents.py SHARDS OUT_DIR --clip-path weights/clip-vit-h-14 \
        --vae-path weights/sd21-vae --height 768 --width 512 [--dtype float16] [--device cuda]

Then train with ``--data.init_args.train_shards OUT_DIR --data.init_args.use_latent_cache true``.
The pixel local-image stream needs frames: build with ``--frames`` (they are kept at the training
size) or turn the stream off (``local_image_stream: false``). Samples that do not decode are
skipped and counted. ``--data.init_args.latent_cache_dir DIR`` instead makes such a cache (with
frames) at the start of fit with the model's own encoders.
"""

import argparse

from datamodules.latent_cache import build_latent_cache
from unianimate.models.frozen import FrozenEncoders


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("shards", help="local path, directory, brace pattern, pipe: or http(s) URL")
    parser.add_argument("out_dir")
    parser.add_argument("--clip-path", required=True)
    parser.add_argument("--vae-path", required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--resize", choices=["center_crop", "stretch"], default="center_crop")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--max-shard-bytes", type=int, default=1 << 30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", action="store_true", help="keep the frames, for the local-image stream")
    args = parser.parse_args()
    encoders = FrozenEncoders(args.clip_path, args.vae_path, sample_posterior=False)
    shards = build_latent_cache(
        args.shards,
        args.out_dir,
        encoders,
        args.height,
        args.width,
        args.resize,
        args.dtype,
        args.max_shard_bytes,
        args.device,
        frames=args.frames,
    )
    print(f"wrote {len(shards)} cache shard(s) to {args.out_dir}")


if __name__ == "__main__":
    main()
