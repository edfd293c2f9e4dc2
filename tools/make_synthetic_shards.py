"""Generate the synthetic video+pose dataset (the demo's embedded default) as WebDataset shards.

python tools/make_synthetic_shards.py data/synthetic --num-train 64 --num-val 8
"""

from __future__ import annotations

import argparse
import json

from datamodules.synthetic import ensure_synthetic_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output folder; train/ and val/ shards go beneath it")
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=8)
    parser.add_argument("--num-train-identities", type=int, default=16)
    parser.add_argument("--num-frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shards = ensure_synthetic_dataset(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        num_train_identities=args.num_train_identities,
        num_frames=args.num_frames,
        height=args.height,
        width=args.width,
        seed=args.seed,
    )
    print(json.dumps({split: [str(p) for p in paths] for split, paths in shards.items()}, indent=1))


if __name__ == "__main__":
    main()
