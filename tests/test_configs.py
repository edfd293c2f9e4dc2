"""Every shipped YAML parses through the real CLI parser and instantiates: the paper-size model on
the meta device, tiny models and strategies for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser

from unianimate import cli
from unianimate.models.unianimate import UniAnimate

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PAPER = ["uni_mamba.yaml", "uni_transformer.yaml"]
STRATEGIES = sorted(p.name for p in (CONFIGS / "strategy").glob("*.yaml"))
ABLATIONS = sorted(p.name for p in (CONFIGS / "ablations").glob("*.yaml"))


def parse(monkeypatch, *configs: Path | str, extra: tuple[str, ...] = ()):
    """The composed config as ``unianimate fit`` would see it, nothing instantiated."""
    monkeypatch.setattr(cli.UniAnimateCLI, "instantiate_classes", lambda self: None)
    args = [a for c in configs for a in ("--config", str(c))]
    return cli.main(args=[*args, *extra], run=False).config


def build(node, base: type):
    """Instantiate one ``class_path`` / ``init_args`` node as ``base``."""
    parser = ArgumentParser()
    parser.add_argument("--node", type=base)
    value = node.as_dict() if hasattr(node, "as_dict") else node
    return parser.instantiate(parser.parse_object({"node": value})).node


def unet_args(config):
    return config.model.denoiser.init_args.unet.init_args


def test_every_yaml_is_covered():
    shipped = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")}
    covered = {
        "demo.yaml",
        "animate.yaml",
        "release.yaml",
        "showcase.yaml",
        *PAPER,
    }  # animate.yaml: see test_animate_config_composes; release.yaml: test_release_config.py
    covered |= {f"strategy/{n}" for n in STRATEGIES} | {f"ablations/{n}" for n in ABLATIONS}
    covered |= {p.relative_to(CONFIGS).as_posix() for p in (CONFIGS / "model").glob("*.yaml")}
    assert shipped <= covered, f"configs without a test: {sorted(shipped - covered)}"
    assert {"ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"} <= set(STRATEGIES)


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_on_meta(monkeypatch, name):
    config = parse(monkeypatch, CONFIGS / name)
    assert (config.data.init_args.height, config.data.init_args.width) == (768, 512)
    assert config.data.init_args.num_frames == 16
    assert config.model.encoders.init_args.clip_path == "weights/clip-vit-h-14"
    assert unet_args(config).temporal == name.removeprefix("uni_").removesuffix(".yaml")
    assert [p.class_path for p in config.trainer.plugins] == ["unianimate.checkpoint_io.AtomicCheckpointIO"]
    with torch.device("meta"):
        model = build(config.model.denoiser, UniAnimate)
    assert unet_args(config).base_channels == 320 and unet_args(config).context_dim == 1024
    assert sum(p.numel() for p in model.parameters()) > 1_000_000_000
    # One paper-size forward on meta: 16 frames at 96x64 latents go through (shapes only).
    with torch.device("meta"):
        from unianimate.conditions import Conditions

        b, f, h, w = 1, 16, 96, 64
        cond = Conditions(
            pose=torch.zeros(b, 3, f, 8 * h, 8 * w),
            ref_pose=torch.zeros(b, 3, 8 * h, 8 * w),
            ref_latent=torch.zeros(b, 4, h, w),
            clip_embed=torch.zeros(b, 1024),
        )
        model.set_empty_text(torch.zeros(77, 1024))
        out = model(torch.zeros(b, 4, f, h, w), torch.zeros(b, dtype=torch.long), cond)
    assert out.shape == (b, 4, f, h, w)


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_composes(monkeypatch, name):
    base = parse(monkeypatch, CONFIGS / "uni_mamba.yaml")
    config = parse(monkeypatch, CONFIGS / "uni_mamba.yaml", CONFIGS / "ablations" / name)
    expected = {
        "causal_mamba.yaml": lambda c: (
            getattr(getattr(unet_args(c).temporal, "init_args", None), "bidirectional", True) is False
        ),
        "transformer.yaml": lambda c: unet_args(c).temporal == "transformer",
        "no_first_frame.yaml": lambda c: c.model.objective.init_args.p_first_frame == 0.0,
        "no_reference_guidance.yaml": lambda c: c.model.denoiser.init_args.reference_guidance is False,
        "no_reference_pose.yaml": lambda c: c.model.denoiser.init_args.reference_pose is False,
        "frames32.yaml": lambda c: c.data.init_args.num_frames == 32,
    }
    assert name in expected, f"add the ablation {name} to this test"
    assert expected[name](config) and not expected[name](base)
    assert config.trainer.default_root_dir != base.trainer.default_root_dir  # runs do not collide
    with torch.device("meta"):
        build(config.model.denoiser, UniAnimate)


def build_strategy(monkeypatch, name: str):
    """``configs/strategy/<name>`` composed after the paper-size config: (config, built strategy)."""
    from lightning.pytorch.strategies import Strategy

    if name.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="pip install deepspeed (the [deepspeed] extra)")
    config = parse(monkeypatch, CONFIGS / "uni_mamba.yaml", CONFIGS / "strategy" / name)
    return config, build(config.trainer.strategy, Strategy)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_builds(monkeypatch, name):
    config, strategy = build_strategy(monkeypatch, name)
    kind = {"ddp": "DDPStrategy", "fsdp": "FSDPStrategy"}.get(name.removesuffix(".yaml"), "DeepSpeedStrategy")
    assert type(strategy).__name__ == kind
    if name.startswith("deepspeed"):
        stage = strategy.config["zero_optimization"]["stage"]
        assert stage == (2 if "zero2" in name else 3)
    # EMA needs full parameters on every rank: off under parameter sharding (docs/scale_out.md).
    sharded = name.startswith(("fsdp", "deepspeed_zero3"))
    assert (config.model.ema_decay is None) == sharded


def test_demo_instantiates_for_real(monkeypatch, tmp_path):
    from unianimate import demo_cache
    from unianimate.module import UniAnimateModule

    # The demo's .cache/unianimate paths resolve under demo_cache.ROOT (the repository's cache),
    # here a temporary folder: the stand-in encoders are generated there on first use.
    monkeypatch.setattr(demo_cache, "ROOT", tmp_path / "cache")
    config = parse(monkeypatch, CONFIGS / "demo.yaml")
    module = build(
        {"class_path": "unianimate.module.UniAnimateModule", "init_args": config.model.as_dict()},
        UniAnimateModule,
    )
    assert sum(p.numel() for p in module.denoiser.parameters()) < 5_000_000
    assert (tmp_path / "cache" / "tiny_clip" / "config.json").is_file()
    names = [c.class_path.rsplit(".", 1)[-1] for c in config.trainer.callbacks]
    assert {"RNGState", "LossGuard", "Throughput", "PreemptionCheckpoint"} <= set(names)
    assert [p.class_path for p in config.trainer.plugins] == ["unianimate.checkpoint_io.AtomicCheckpointIO"]


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "model").glob("*.yaml")))
def test_model_presets(name):
    import yaml

    node = yaml.safe_load((CONFIGS / "model" / name).read_text())
    with torch.device("meta"):
        model = build(node, UniAnimate)
    if name == "unianimate.yaml":  # the release's UNet: SPEC §2's count
        assert sum(p.numel() for p in model.parameters()) == 1_416_564_300


def test_animate_config_composes(monkeypatch):
    config = parse(
        monkeypatch,
        CONFIGS / "demo.yaml",
        CONFIGS / "animate.yaml",
        extra=("--data.init_args.reference=ref.png", "--data.init_args.driving=pose.npz"),
    )
    assert config.data.class_path == "datamodules.animate.AnimateDataModule"


def test_missing_weights_error_names_the_path(tmp_path, monkeypatch):
    from unianimate.models.frozen import FrozenEncoders

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="weights/clip-vit-h-14"):
        FrozenEncoders("weights/clip-vit-h-14", "weights/sd21-vae")


def test_print_config_without_weights(tmp_path):
    """``unianimate fit --config configs/uni_mamba.yaml --print_config`` needs no weights."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "unianimate.cli",
            "fit",
            "--config",
            str(CONFIGS / "uni_mamba.yaml"),
            "--print_config",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "clip_path: weights/clip-vit-h-14" in result.stdout
    assert "temporal: mamba" in result.stdout


@pytest.mark.parametrize("name", STRATEGIES)
def test_ema_refused_under_parameter_sharding(monkeypatch, name):
    """The module's setup rejects EMA where parameters are sharded (FSDP, ZeRO-3), allows it elsewhere."""
    from types import SimpleNamespace

    from unianimate.module import UniAnimateModule

    _, strategy = build_strategy(monkeypatch, name)
    fake = SimpleNamespace(
        ema=object(), trainer=SimpleNamespace(strategy=strategy), hparams=SimpleNamespace(ema_decay=0.9999)
    )
    if name.startswith(("fsdp", "deepspeed_zero3")):
        with pytest.raises(ValueError, match="needs full parameters"):
            UniAnimateModule.setup(fake, "fit")
    else:
        UniAnimateModule.setup(fake, "fit")


def test_demo_samples_only_where_it_trains(monkeypatch):
    from unianimate.diffusion.sampling import DDIMSampler

    config = parse(monkeypatch, CONFIGS / "demo.yaml")
    sampler = config.model.sampler.init_args
    trained = config.model.objective.init_args.timesteps
    visited = DDIMSampler(sampler.num_steps, sampler.spacing).timesteps
    assert set(visited) == set(trained), (
        "change model.sampler.num_steps and model.objective.timesteps together"
    )


def test_showcase_weights_fit_the_showcase_config(monkeypatch):
    """The committed showcase weights load, every tensor, into the model the two configs build."""
    from safetensors.torch import load_file

    from unianimate.models.init_weights import load_init_weights

    weights = REPO / "assets" / "showcase" / "denoiser.safetensors"
    config = parse(monkeypatch, CONFIGS / "demo.yaml", CONFIGS / "showcase.yaml")
    assert config.trainer.max_steps > 1_000  # the demo recipe, trained longer
    model = build(config.model.denoiser, UniAnimate)
    report = load_init_weights(model, weights, strict=True)  # a new or unused tensor is an error
    stored = load_file(weights)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items() if k in model.state_dict())
    assert len(report.table()) > 0 and weights.stat().st_size <= 10_000_000
