"""Pose-following experiments: train the demo config with a change, score it with exact ground truth.

    python studies/pose_following.py NAME [--out runs/pose_following] [-- CLI overrides ...]

Trains ``unianimate fit --config configs/demo.yaml`` plus the overrides (the same CLI, in this
process), then scores the final EMA weights with :func:`callbacks.pose_following.evaluate_pose_following`
(held-out identities 30_000 .. 30_007, each from a reference in a third pose driven by two motions
of 16 frames: PSNR, motion-region PSNR, figure IoU, pose-swap margin, beside copying the reference
and the autoencoder). Writes ``OUT/NAME.json`` (settings, fit wall time, the rows) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from callbacks.pose_following import PoseSwap, evaluate_pose_following, format_pose_rows
from unianimate.cli import main as cli_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--out", default="runs/pose_following")
    parser.add_argument("--config", action="append", default=None, help="default: configs/demo.yaml")
    parser.add_argument("--ckpt", default=None, help="score this checkpoint instead of training")
    parser.add_argument("--identities", type=int, nargs="+", default=None, help="default: PoseSwap's")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    out = Path(args.out)
    run_dir = out / "runs" / args.name
    fit_args = [x for c in args.config or ["configs/demo.yaml"] for x in ("--config", c)]
    fit_args += [
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        *overrides,
    ]
    start = time.perf_counter()
    if args.ckpt is None:
        cli = cli_main(["fit", *fit_args])
    else:  # built, not run; the checkpoint's weights and EMA put in as fit would resume them
        cli = cli_main(fit_args, run=False)
        checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=False)  # our own run's file
        cli.model.on_load_checkpoint(checkpoint)
        cli.model.load_state_dict(checkpoint["state_dict"])
    steps = cli.trainer.global_step if args.ckpt is None else checkpoint["global_step"]
    fit_s = time.perf_counter() - start
    protocol = PoseSwap() if args.identities is None else PoseSwap(identities=args.identities)
    results = evaluate_pose_following(cli.model, cli.datamodule.test_example, protocol)
    table = format_pose_rows(results)
    print(f"\n[{args.name}] fit {fit_s:.0f} s, {steps} steps\n{table}")
    out.mkdir(parents=True, exist_ok=True)
    record = {"name": args.name, "args": fit_args, "fit_s": fit_s, "steps": steps, "ckpt": args.ckpt}
    (out / f"{args.name}.json").write_text(json.dumps({**record, "results": results}, indent=1))


if __name__ == "__main__":
    main()
