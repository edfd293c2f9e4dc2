"""Train the showcase model: the demo recipe, trained longer, its EMA weights committed.

    python tools/train_showcase.py assets/showcase        # the shipped one: defaults, 1 thread

Runs ``unianimate fit --config configs/demo.yaml --config configs/showcase.yaml`` (the same CLI, in
this process, into ``runs/showcase``) on one thread (the float sums then come out the same run
after run), then copies the run's ``ema.safetensors`` (the EMA denoiser, our module names) to
``OUT/denoiser.safetensors``. Use it with ``--model.init_weights OUT/denoiser.safetensors`` beside
the two configs (README, "The showcase model").
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from pathlib import Path

import torch

from unianimate.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for denoiser.safetensors")
    parser.add_argument("--run-dir", default="runs/showcase")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="further CLI overrides (the shipped run had none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = [REPO / "configs" / "demo.yaml", REPO / "configs" / "showcase.yaml"]
    fit_args = [x for c in configs for x in ("--config", str(c))]
    fit_args += [
        f"--trainer.default_root_dir={args.run_dir}",
        f"--trainer.logger.init_args.save_dir={args.run_dir}",
        *args.overrides,
    ]
    start = time.perf_counter()
    cli = cli_main(["fit", *fit_args])
    ema = Path(cli.trainer.log_dir) / "ema.safetensors"
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "denoiser.safetensors"
    shutil.copyfile(ema, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    minutes = (time.perf_counter() - start) / 60
    print(
        f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, sha256 {digest}) after {minutes:.1f} minutes"
    )


if __name__ == "__main__":
    main()
