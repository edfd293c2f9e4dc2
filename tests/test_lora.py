"""LoRA through peft (``--model.lora.rank``): what trains, the merge, checkpoints, bitwise resume;
and ``--model.init_weights`` applied by the LightningModule (once; ``--ckpt_path`` wins)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from demo_helpers import REPO, demo_overrides
from safetensors.torch import load_file, save_file
from torch import nn

from unianimate.cli import main
from unianimate.lora import LoRA, merged_state_dict
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

TARGETS = ("to_q", "to_k", "to_v", "to_out", "in_proj", "out_proj")


def _tiny(temporal: str = "transformer") -> UniAnimate:
    init = yaml.safe_load((REPO / "configs" / "model" / "tiny.yaml").read_text())["init_args"]
    unet = init.pop("unet")["init_args"]
    torch.manual_seed(0)
    return UniAnimate(UNet3D(**{**unet, "temporal": temporal}), **init)


@pytest.mark.parametrize("temporal", ["transformer", "mamba"])
def test_only_the_adapters_train_and_their_count(temporal: str) -> None:
    model = _tiny(temporal)
    expected = sum(
        4 * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS
    )
    LoRA(rank=4).apply(model)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum(trainable.values()) == expected
    if temporal == "mamba":
        assert any("mamba.in_proj.lora_A" in n for n in trainable)


@torch.no_grad()
def test_merge_is_base_plus_scale_b_a() -> None:
    model = _tiny()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    LoRA(rank=4, alpha=8.0).apply(model)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.normal_()
    merged = merged_state_dict(model)
    assert merged.keys() == base.keys()
    params = dict(model.named_parameters())
    layer = "unet.mid_block.spatial_attn.block.attn2.to_k"
    a, b = params[f"{layer}.lora_A.default.weight"], params[f"{layer}.lora_B.default.weight"]
    torch.testing.assert_close(merged[f"{layer}.weight"], base[f"{layer}.weight"] + 2.0 * b @ a)
    assert torch.equal(merged["unet.conv_in.weight"], base["unet.conv_in.weight"])  # no adapter there
    # The merged denoiser is a plain one and computes what the adapted one computes.
    plain = _tiny()
    plain.load_state_dict(merged, strict=True)
    x, t = torch.randn(1, 4, 3, 8, 6), torch.tensor([500])
    from unianimate.conditions import Conditions

    cond = Conditions(pose=torch.rand(1, 3, 3, 64, 48))
    torch.testing.assert_close(plain.eval()(x, t, cond), model.eval()(x, t, cond), atol=1e-5, rtol=1e-5)


def test_lora_needs_init_weights(demo_root) -> None:
    from unianimate.models.frozen import FrozenEncoders
    from unianimate.module import UniAnimateModule

    encoders = FrozenEncoders(str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"))
    with pytest.raises(ValueError, match="set --model.init_weights"):
        UniAnimateModule(_tiny(), encoders=encoders, lora=LoRA(rank=2))


# ---- through the CLI (demo config, tiny) ----------------------------------------------------------


def _base(path: Path, seed: int) -> Path:
    """A pretrained tiny denoiser as this project exports it (safetensors, our names)."""
    model = _tiny()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _fit(root: Path, run_dir: Path, steps: int, *extra: str) -> Path:
    main(
        [
            "fit",
            *demo_overrides(root, run_dir, max_steps=steps),
            "--trainer.val_check_interval=1000",
            "--trainer.limit_val_batches=0",
            *extra,
        ]
    )
    return run_dir / "version_0"


@pytest.mark.slow
def test_init_weights_applied_once_and_ckpt_path_wins(demo_root, tmp_path, capsys):
    first, second = _base(tmp_path / "a.safetensors", 1), _base(tmp_path / "b.safetensors", 2)
    run = _fit(demo_root, tmp_path / "run", 1, f"--model.init_weights={first}", "--model.lr=0.0")
    out = capsys.readouterr().out
    assert "this project's names" in out and "total (tensors)" in out
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = load_file(first)
    for key, value in weights.items():  # lr 0: the weights, and the EMA restarted from them, stay
        assert torch.equal(ckpt["state_dict"][f"denoiser.{key}"], value), key
        assert torch.equal(ckpt["ema"]["shadow"][key], value), key
    _fit(
        demo_root,
        tmp_path / "run",
        2,
        f"--model.init_weights={second}",
        "--model.lr=0.0",
        f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    )
    # (LightningCLI puts the checkpoint's hyperparameters over the command line, so the path named
    # here is the first run's.)
    out = capsys.readouterr().out
    assert "wins: --model.init_weights" in out and "not applied" in out and "total (tensors)" not in out
    resumed = torch.load(tmp_path / "run" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 2
    assert torch.equal(resumed["state_dict"]["denoiser.unet.conv_in.weight"], weights["unet.conv_in.weight"])


@pytest.mark.slow
def test_lora_checkpoints_hold_only_adapters_and_resume_bitwise(demo_root, tmp_path, capsys):
    base = _base(tmp_path / "base.safetensors", 3)
    lora = [f"--model.init_weights={base}", "--model.lora.rank=4", "--model.lr=1e-2"]
    straight = _fit(demo_root, tmp_path / "straight", 4, *lora)
    part = _fit(demo_root, tmp_path / "part", 2, *lora)
    capsys.readouterr()
    _fit(demo_root, tmp_path / "part", 4, *lora, f"--ckpt_path={part / 'checkpoints' / 'last.ckpt'}")
    assert "total (tensors)" in capsys.readouterr().out  # the base is read again: the checkpoint lacks it
    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "part" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"] and all(".lora_" in k for k in a["state_dict"])  # only the adapters
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert {f"denoiser.{k}" for k in a["ema"]["shadow"]} == a["state_dict"].keys()  # the EMA: adapters only
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for key in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][key], b["ema"]["shadow"][key]), key
    assert any(a["state_dict"][k].abs().sum() > 0 for k in a["state_dict"] if ".lora_B." in k)  # it trained
    # Exports: the EMA adapters alone, and a full merged denoiser that loads into a plain model.
    ema = load_file(straight / "ema.safetensors")
    assert ema and all(".lora_" in k for k in ema)
    merged = load_file(straight / "denoiser_merged.safetensors")
    _tiny().load_state_dict(merged, strict=True)
    start = load_file(base)
    assert torch.equal(merged["unet.conv_in.weight"], start["unet.conv_in.weight"])  # frozen, no adapter
    # Merged = the init weights + (alpha / rank) B A of the EMA adapters (alpha = rank here).
    layer = "unet.mid_block.spatial_attn.block.attn1.to_q"
    a_ema, b_ema = (a["ema"]["shadow"][f"{layer}.lora_{m}.default.weight"] for m in "AB")
    assert b_ema.abs().sum() > 0
    torch.testing.assert_close(merged[f"{layer}.weight"], start[f"{layer}.weight"] + b_ema @ a_ema)


def test_paper_size_rank_64_count_on_meta() -> None:
    """The README's figure: rank-64 adapters on the release-size denoiser (temporal transformer)."""
    with torch.device("meta"):
        model = UniAnimate(UNet3D())
        expected = sum(
            64 * (m.in_features + m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS
        )
        LoRA(rank=64).apply(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected == 26_590_720
