"""Convert checkpoints to safetensors with our module names.

    python tools/convert_checkpoint.py official unianimate_16f_32f_non_ema_223000.pth unianimate.safetensors

    python tools/convert_checkpoint.py zero runs/x/checkpoints/last.ckpt consolidated.ckpt
    python tools/convert_checkpoint.py zero runs/x/checkpoints/last.ckpt denoiser.safetensors [--ema]

``official``: the released UniAnimate UNet (a bare state dict with the official key names) through
the state-dict adapter; every key must map, and the result loads strictly into
``configs/model/unianimate.yaml``.

``zero``: a DeepSpeed ZeRO-2/3 checkpoint folder (Lightning writes ``<name>.ckpt/`` as a folder of
shards) -> one file. ``.ckpt``: a float32 Lightning checkpoint (all client state: EMA, loops, RNG;
no optimizer) for ``--ckpt_path`` / ``load_from_checkpoint``. ``.safetensors``: the denoiser's
weights with our names (``UniAnimate.load_state_dict``), or with ``--ema`` the EMA weights. A
single-file Lightning checkpoint (DDP, FSDP full) is accepted too and only exported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from unianimate.checks import check_state_dict, load_checkpoint
from unianimate.errors import InputError, user_errors_as_one_line
from unianimate.models.state_dict_adapter import official_to_ours


def convert_official(src: Path, dst: Path, check: bool = True) -> int:
    """Released ``.pth`` -> our safetensors. Returns the number of tensors written."""
    sd = load_checkpoint(src, "src")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"src: '{src}' is not a bare state dict of tensors (the released UNet .pth)")
    ours = {k: v.contiguous() for k, v in official_to_ours(sd).items()}
    if check:
        from unianimate.models.unet3d import UNet3D
        from unianimate.models.unianimate import UniAnimate

        with torch.device("meta"):
            model = UniAnimate(UNet3D())
        check_state_dict(ours, model.state_dict(), str(src), "src")  # one line, not 482
        model.load_state_dict(ours, strict=True, assign=True)
    save_file(ours, str(dst))
    return len(ours)


def consolidate_zero(src: Path, dst: Path, tag: str | None = None) -> dict:
    """ZeRO shard folder -> one float32 Lightning checkpoint at ``dst`` (Lightning's own converter)."""
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    return convert_zero_checkpoint_to_fp32_state_dict(src, dst, tag=tag)


def denoiser_weights(checkpoint: dict, ema: bool = False) -> dict[str, torch.Tensor]:
    """The denoiser's (or the EMA's) tensors from a Lightning checkpoint, keys without ``model.``."""
    if ema:
        if "ema" not in checkpoint:
            raise KeyError("the checkpoint has no EMA (trained with ema_decay null?)")
        return dict(checkpoint["ema"]["shadow"])
    state = checkpoint["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def convert_zero(src: Path, dst: Path, ema: bool = False, tag: str | None = None) -> int:
    """ZeRO folder (or single-file checkpoint) -> ``dst`` (.ckpt or .safetensors). Returns the tensor count."""
    if dst.suffix not in (".ckpt", ".safetensors"):
        raise ValueError(f"output must end in .ckpt or .safetensors, got {dst}")
    if src.is_file():
        checkpoint = load_checkpoint(src, "src")
        if dst.suffix == ".ckpt":
            raise ValueError(f"{src} is already a single-file checkpoint")
    elif dst.suffix == ".ckpt":
        return len(consolidate_zero(src, dst, tag)["state_dict"])
    else:
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            checkpoint = consolidate_zero(src, Path(tmp) / "consolidated.ckpt", tag)
    weights = {k: v.detach().float().contiguous() for k, v in denoiser_weights(checkpoint, ema).items()}
    metadata = {"global_step": str(checkpoint.get("global_step", "")), "weights": "ema" if ema else "model"}
    save_file(weights, str(dst), metadata=metadata)
    return len(weights)


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
    zero = commands.add_parser("zero", help="DeepSpeed ZeRO checkpoint folder -> one .ckpt or .safetensors")
    zero.add_argument("src", type=Path, help="the <name>.ckpt folder Lightning's DeepSpeed strategy wrote")
    zero.add_argument("dst", type=Path, help="OUT.ckpt (Lightning, fp32) or OUT.safetensors (denoiser)")
    zero.add_argument("--ema", action="store_true", help="export the EMA weights (.safetensors only)")
    zero.add_argument("--tag", default=None, help="DeepSpeed tag (default: the folder's 'latest')")
    args = parser.parse_args(argv)
    if args.command == "official":
        n = convert_official(args.src, args.dst, check=not args.no_check)
        print(f"wrote {n} tensors to {args.dst}")
    elif args.command == "zero":
        n = convert_zero(args.src, args.dst, ema=args.ema, tag=args.tag)
        print(f"wrote {n} tensors to {args.dst}")


if __name__ == "__main__":
    with user_errors_as_one_line():
        main()
