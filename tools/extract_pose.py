"""A video -> its keypoints as an npz in our format (datamodules/format.py PoseSequence).

    python tools/extract_pose.py dance.mp4 dance.pose.npz --backend mediapipe
    python tools/extract_pose.py dance.mp4 dance.pose.npz --backend dwpose \\
        --dwpose-detector yolox_l.onnx --dwpose-model dw-ll_ucoco_384.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

from datamodules.format import decode_mp4
from datamodules.pose_extract import extract_poses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video", help="an mp4 file")
    parser.add_argument("output", help="the .npz to write")
    parser.add_argument("--backend", choices=["dwpose", "mediapipe"], required=True)
    parser.add_argument("--dwpose-detector", help="yolox_l.onnx")
    parser.add_argument("--dwpose-model", help="dw-ll_ucoco_384.onnx")
    args = parser.parse_args(argv)
    kwargs = {}
    if args.backend == "dwpose":
        kwargs = {"detector": args.dwpose_detector, "pose_model": args.dwpose_model}
    frames = decode_mp4(args.video)
    pose = extract_poses(frames, args.backend, progress=True, **kwargs)
    Path(args.output).write_bytes(pose.to_npz_bytes())
    found = (pose.body[:, 1, 2] > 0.3).mean()
    print(f"{args.output}: {len(pose)} frames, neck found in {found:.0%}")


if __name__ == "__main__":
    main()
