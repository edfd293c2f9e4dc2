"""Convert checkpoints to safetensors with our module names.

    python tools/convert_checkpoint.py official unianimate_16f_32f_non_ema_223000.pth unianimate.safetensors

``official``: the released UniAnimate UNet (a bare state dict with the official key names) through
the state-dict adapter; every key must map, and the result loads strictly into
``configs/model/unianimate.yaml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from unianimate.models.state_dict_adapter import official_to_ours


def convert_official(src: Path, dst: Path, check: bool = True) -> int:
    """Released ``.pth`` -> our safetensors. Returns the number of tensors written."""
    sd = torch.load(src, weights_only=True, map_location="cpu")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{src} is not a bare state dict of tensors")
    ours = {k: v.contiguous() for k, v in official_to_ours(sd).items()}
    if check:
        from unianimate.models.unet3d import UNet3D
        from unianimate.models.unianimate import UniAnimate

        with torch.device("meta"):
            model = UniAnimate(UNet3D())
        model.load_state_dict(ours, strict=True, assign=True)
    save_file(ours, str(dst))
    return len(ours)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    official = commands.add_parser("official", help="released UniAnimate .pth -> safetensors with our names")
    official.add_argument("src", type=Path)
    official.add_argument("dst", type=Path)
    official.add_argument(
        "--no-check", action="store_true", help="skip the strict load into the release preset"
    )
    args = parser.parse_args(argv)
    if args.command == "official":
        n = convert_official(args.src, args.dst, check=not args.no_check)
        print(f"wrote {n} tensors to {args.dst}")


if __name__ == "__main__":
    main()
