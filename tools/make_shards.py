"""Videos (mp4 files or frame folders) -> WebDataset shards with keypoints and a manifest.

    python tools/make_shards.py VIDEOS OUT --pose-backend mediapipe --workers 4 --max-side 768
    python tools/make_shards.py VIDEOS OUT --pose-backend precomputed --pose-dir KEYPOINTS
    python tools/make_shards.py VIDEOS OUT --pose-backend dwpose --dwpose-detector yolox_l.onnx \\
        --dwpose-model dw-ll_ucoco_384.onnx

Rerunning the same command resumes (see datamodules/shard_builder.py for exactly what survives)
and says what it reuses and redoes; other settings (``--pose-dir`` included) are refused.
Exit codes: 0 when samples were written, 1 when none were, 2 for a bad argument or folder.
"""

from __future__ import annotations

import argparse
import json

from datamodules.shard_builder import BuildSettings, build_shards
from unianimate.errors import UserError, user_errors_as_one_line


class NothingWritten(UserError):
    """No sample in the shards: every video skipped, or none found."""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input_dir", help="folder of *.mp4 files and/or frame folders (<video>/images/*.png)")
    parser.add_argument("out_dir")
    parser.add_argument("--pose-backend", choices=["dwpose", "mediapipe", "precomputed"], required=True)
    parser.add_argument("--pose-dir", help="precomputed keypoints: <video>.pose.npz / .npz / .json")
    parser.add_argument("--dwpose-detector", help="yolox_l.onnx")
    parser.add_argument("--dwpose-model", help="dw-ll_ucoco_384.onnx")
    parser.add_argument("--max-shard-bytes", type=int, default=1 << 30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--min-frames", type=int, default=16)
    parser.add_argument("--max-side", type=int, help="downscale so the longer side is at most this")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of frame folders")
    parser.add_argument("--source", default="", help="metadata: where the videos come from")
    parser.add_argument("--licence", default="", help="metadata: their licence")
    args = parser.parse_args(argv)
    backend_kwargs = {}
    if args.pose_backend == "dwpose":
        if not (args.dwpose_detector and args.dwpose_model):
            parser.error("--pose-backend dwpose needs --dwpose-detector and --dwpose-model")
        backend_kwargs = {"detector": args.dwpose_detector, "pose_model": args.dwpose_model}
    if args.pose_backend == "precomputed" and not args.pose_dir:
        parser.error("--pose-backend precomputed needs --pose-dir")
    settings = BuildSettings(
        args.pose_backend, args.min_frames, args.max_side, args.fps, args.source, args.licence
    )
    manifest = build_shards(
        args.input_dir,
        args.out_dir,
        settings,
        backend_kwargs,
        args.pose_dir,
        args.max_shard_bytes,
        args.workers,
    )
    summary = {k: manifest[k] for k in ("samples", "frames")}
    print(
        json.dumps({"shards": len(manifest["shards"]), **summary, "skipped": manifest["skipped"]}, indent=1)
    )
    if manifest["samples"] == 0:
        reasons = sorted({reason.split(":")[0] for reason in manifest["skipped"].values()})
        raise NothingWritten(
            f"no samples written to '{args.out_dir}': {len(manifest['skipped'])} video(s) skipped"
            + (f" ({', '.join(reasons)})" if reasons else f", none found in '{args.input_dir}'")
        )
    return manifest


if __name__ == "__main__":
    with user_errors_as_one_line():
        main()
