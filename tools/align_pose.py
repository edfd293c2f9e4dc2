"""Retarget a driving pose sequence onto a reference skeleton (SPEC §5 pose alignment).

    python tools/align_pose.py ref.pose.npz driving.pose.npz aligned.pose.npz
Inputs are keypoint files in the shard format (``.npz`` or ``.json``); only the reference's first
frame is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from datamodules.format import PoseSequence
from datamodules.pose_align import align_pose


def load_pose(path: Path) -> PoseSequence:
    data = path.read_bytes()
    return PoseSequence.from_json_bytes(data) if path.suffix == ".json" else PoseSequence.from_npz_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("driving", type=Path)
    parser.add_argument("output", type=Path, help="aligned keypoints, .npz")
    parser.add_argument("--reference-hw", type=int, nargs=2, metavar=("H", "W"), help="reference frame size")
    parser.add_argument("--driving-hw", type=int, nargs=2, metavar=("H", "W"), help="driving frame size")
    args = parser.parse_args()
    aligned = align_pose(
        load_pose(args.reference),
        load_pose(args.driving),
        reference_hw=None if args.reference_hw is None else tuple(args.reference_hw),
        driving_hw=None if args.driving_hw is None else tuple(args.driving_hw),
    )
    args.output.write_bytes(aligned.to_npz_bytes())
    print(f"wrote {len(aligned)} aligned frames to {args.output}")


if __name__ == "__main__":
    main()
