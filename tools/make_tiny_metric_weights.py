"""Write RANDOM metric weights in the real files' layouts, for tests and the demo.

    python tools/make_tiny_metric_weights.py OUT_DIR [--seed 0]

Writes ``random_vgg16.safetensors`` (torchvision VGG16 ``features.*`` layout),
``random_lpips_vgg_heads.pth`` (lpips v0.1 ``lin{i}.model.1.weight`` layout) and
``random_i3d_rgb.pt`` (pytorch-i3d layout). They exercise exactly the loading code of the real
files; numbers computed with them are meaningless, and results name them as random weights
(file names starting with ``random_``).
"""

import argparse
from pathlib import Path

from unianimate.metrics.random_weights import make_tiny_metric_weights


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for field, path in make_tiny_metric_weights(args.out_dir, args.seed).items():
        print(f"{field}: {path}")


if __name__ == "__main__":
    main()
