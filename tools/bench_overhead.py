"""Lightning's training step against a plain PyTorch loop: same model, batch, optimizer, device.

    python tools/bench_overhead.py [--steps 40] [--repeats 3] [--device cpu|cuda] [--frames 8]

What is measured: the tiny UniAnimate denoiser (configs/model/tiny.yaml) on one fixed random batch
(latents, poses, reference, CLIP embedding, all precomputed), v-target MSE, AdamW, both fed by the
same DataLoader over that batch. The raw loop is ``to(device); zero_grad; forward; loss; backward;
step``; the Lightning run is ``Trainer.fit`` on a module whose ``training_step`` is the same forward
+ loss, with logging
(``self.log`` of the loss every step), no checkpoints, no progress bar. Time per step is the wall time
between the ends of two steps (so it includes Lightning's loop, hooks, logging and batch fetching),
after ``--warmup`` steps. Each run's figure is its median step; runs alternate raw / Lightning
``--repeats`` times and the table keeps the fastest run of each (on a shared machine the slower runs
measure the neighbours, not the loop).
The frozen encoders, the diffusion objective and the EMA are not in either loop (they are the same
code on both sides). Target: overhead <= 3%.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser
from torch.utils.data import DataLoader, Dataset

from unianimate.conditions import Conditions
from unianimate.models.unianimate import UniAnimate

REPO = Path(__file__).resolve().parents[1]


def tiny_model(seed: int = 0) -> UniAnimate:
    torch.manual_seed(seed)
    parser = ArgumentParser()
    parser.add_argument("--model", type=UniAnimate)
    node = yaml.safe_load((REPO / "configs" / "model" / "tiny.yaml").read_text())
    model = parser.instantiate(parser.parse_object({"model": node})).model
    model.set_empty_text(torch.randn(77, 32))
    return model


def random_batch(frames: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = height // 8, width // 8
    return {
        "x": torch.randn(1, 4, frames, h, w, generator=g),
        "t": torch.randint(0, 1000, (1,), generator=g),
        "target": torch.randn(1, 4, frames, h, w, generator=g),
        "pose": torch.rand(1, 3, frames, height, width, generator=g),
        "ref_pose": torch.rand(1, 3, height, width, generator=g),
        "ref_latent": torch.randn(1, 4, h, w, generator=g),
        "clip_embed": torch.randn(1, 32, generator=g),
        "local_image": torch.rand(1, 3, height, width, generator=g),
    }


def loss_fn(model: UniAnimate, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    cond = Conditions(
        pose=batch["pose"],
        ref_pose=batch["ref_pose"],
        ref_latent=batch["ref_latent"],
        clip_embed=batch["clip_embed"],
        local_image=batch["local_image"],
    )
    return torch.nn.functional.mse_loss(model(batch["x"], batch["t"], cond), batch["target"])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_loop(batch: dict, steps: int, warmup: int, device: torch.device) -> float:
    model = tiny_model().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ends = []
    # The same DataLoader as the Lightning run: only the training loop differs.
    for cpu_batch in DataLoader(Repeat(batch, warmup + steps), batch_size=1):
        step_batch = {k: v.to(device) for k, v in cpu_batch.items()}
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, step_batch)
        loss.backward()
        optimizer.step()
        sync(device)
        ends.append(time.perf_counter())
    return median_step(ends, warmup)


def median_step(ends: list[float], warmup: int) -> float:
    return statistics.median(b - a for a, b in zip(ends[warmup - 1 :], ends[warmup:]))


class Repeat(Dataset):
    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = {k: v[0] for k, v in batch.items()}, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


class Bench(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_model()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = loss_fn(self.model, batch)
        self.log("train/loss", loss, batch_size=1)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=1e-4)


class StepClock(L.Callback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.ends = device, []

    def on_train_batch_end(self, *args) -> None:
        sync(self.device)
        self.ends.append(time.perf_counter())


def lightning_loop(batch: dict, steps: int, warmup: int, device: torch.device) -> float:
    clock = StepClock(device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        num_sanity_val_steps=0,
    )
    loader = DataLoader(Repeat(batch, warmup + steps), batch_size=1)
    trainer.fit(Bench(), loader)
    return median_step(clock.ends, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = random_batch(args.frames, args.height, args.width)
    raw, lit = [], []
    for _ in range(args.repeats):
        raw.append(raw_loop(batch, args.steps, args.warmup, device))
        lit.append(lightning_loop(batch, args.steps, args.warmup, device))
    r, m = min(raw), min(lit)
    print(
        f"\ntiny UniAnimate denoiser, batch 1 x {args.frames} frames at {args.width}x{args.height}, AdamW, {device}"
    )
    print(
        f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats} alternating runs (each: median step)"
    )
    print("| loop      | ms/step (best)   | ms/step (all runs)         | ratio |")
    print("|-----------|------------------|----------------------------|-------|")
    print(f"| raw torch | {r * 1e3:16.2f} | {', '.join(f'{x * 1e3:.1f}' for x in raw):26} | 1.000 |")
    print(f"| Lightning | {m * 1e3:16.2f} | {', '.join(f'{x * 1e3:.1f}' for x in lit):26} | {m / r:.3f} |")
    verdict = "within" if m / r <= 1.03 else "above"
    print(f"Lightning overhead: {100 * (m / r - 1):+.1f}% ({verdict} the 3% target)")


if __name__ == "__main__":
    main()
