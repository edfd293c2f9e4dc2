"""The layering and the config contract: the core does not import the data package, the module stays
small and builds conditions in one place, renamed keys stop with one line, no knob does nothing."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from demo_helpers import REPO

from unianimate.batch import VideoBatch
from unianimate.conditions import build_conditions
from unianimate.diffusion.condition_dropout import ConditionDropout
from unianimate.models.temporal import MambaTemporal


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_does_not_import_the_data_package():
    offenders = {
        str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if m.split(".")[0] == "datamodules")
        for p in (REPO / "unianimate").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_module_is_small_and_builds_conditions_in_one_place():
    source = (REPO / "unianimate" / "module.py").read_text()
    assert len(source.splitlines()) <= 300
    assert "Conditions(" not in source and source.count("build_conditions(") == 1
    # Outside the model and its tests, nothing assembles Conditions by hand.
    library = [p for d in ("unianimate", "callbacks", "datamodules") for p in (REPO / d).rglob("*.py")]
    by_hand = [p.relative_to(REPO).as_posix() for p in library if "Conditions(" in p.read_text()]
    assert by_hand == ["unianimate/conditions.py"]


def test_readme_overrides_have_no_init_args():
    commands = [
        line for line in (REPO / "README.md").read_text().splitlines() if re.search(r"--\w+\.\w", line)
    ]
    assert commands, "the README shows no override"
    assert not [line for line in commands if "init_args" in line or "model.model" in line]


def test_paper_configs_reuse_the_model_preset():
    for name in ("uni_mamba.yaml", "uni_transformer.yaml"):
        text = (REPO / "configs" / name).read_text()
        assert "denoiser: model/unianimate.yaml" in text and "base_channels" not in text


@pytest.mark.parametrize(
    "arg, new",
    [
        ("--model.segment_frames=4", "model.long_video.segment_frames"),
        ("--model.model.init_args.unet.init_args.temporal=mamba", "model.denoiser"),
        ("--model.eval_protocol.mode=disco_compat", "evaluation.protocol"),
        ("--model.dropout.p_first_frame=0.2", "model.dropout.p_local_image"),
    ],
)
def test_renamed_key_stops_with_one_line(arg, new, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "unianimate.cli", "fit", "--config", str(REPO / "configs" / "demo.yaml"), arg],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and new in lines[0], result.stderr[-2000:]


def test_renamed_key_in_a_config_file(tmp_path):
    from unianimate.cli import renamed_keys

    old = tmp_path / "old.yaml"
    old.write_text(
        "model:\n  model:\n    init_args:\n      unet:\n        init_args:\n          mamba_d_state: 8\n"
    )
    lines = renamed_keys(["fit", "--config", str(old)])
    assert any("model.denoiser" in line for line in lines) and any("MambaTemporal" in line for line in lines)
    # the new spelling of the same setting is not flagged
    new = tmp_path / "new.yaml"
    new.write_text(
        "model:\n  denoiser.unet.temporal:\n    class_path: MambaTemporal\n    init_args:\n      d_state: 8\n"
    )
    assert renamed_keys(["fit", "--config", str(new)]) == []


def test_dropout_for_a_condition_the_denoiser_lacks_is_named(recwarn):
    from model_helpers import tiny_unianimate

    from unianimate.module import _check_knobs

    model = tiny_unianimate()
    uses = model.conditions - {"local_image"}
    _check_knobs(ConditionDropout(), uses)  # defaults: nothing set, nothing to say
    _check_knobs(ConditionDropout(p_local_image=0.0), uses)  # "never drop it": consistent
    assert not recwarn.list
    with pytest.warns(UserWarning, match="p_local_image=0.3 has no effect"):
        _check_knobs(ConditionDropout(p_local_image=0.3), uses)


def test_sampling_at_timesteps_the_objective_skips_is_named(recwarn):
    from unianimate.diffusion.objective import DiffusionObjective
    from unianimate.diffusion.sampling import DDIMSampler
    from unianimate.module import _check_knobs

    objective = DiffusionObjective(timesteps=[999, 499])
    uses = frozenset({"pose"})
    _check_knobs(ConditionDropout(), uses, objective.untrained(DDIMSampler(2, "trailing").timesteps))
    assert not recwarn.list
    with pytest.warns(
        UserWarning, match=r"sampler timesteps \[666, 332\] are not in model.objective.timesteps"
    ):
        _check_knobs(ConditionDropout(), uses, objective.untrained(DDIMSampler(3, "trailing").timesteps))


class RecordingEncoders:
    """Stands in for FrozenEncoders: records which encoders run."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode_video(self, video):
        self.calls.append("video")
        return torch.zeros(video.shape[0], 4, video.shape[2], 2, 2)

    def encode_images(self, images):
        self.calls.append("images")
        return torch.zeros(images.shape[0], 4, 2, 2)

    def encode_clip(self, images):
        self.calls.append("clip")
        return torch.zeros(images.shape[0], 8)


def batch() -> VideoBatch:
    return VideoBatch(
        pose=torch.rand(2, 3, 3, 16, 16),
        ref_pose=torch.rand(2, 3, 16, 16),
        ref_image=torch.full((2, 3, 16, 16), 0.5),
        video=torch.full((2, 3, 3, 16, 16), -0.5),
    )


def test_only_the_declared_conditions_are_built():
    encoders = RecordingEncoders()
    latents, cond = build_conditions(batch(), encoders, frozenset({"pose", "clip_embed"}), training=True)
    assert encoders.calls == ["video", "clip"] and latents.shape == (2, 4, 3, 2, 2)
    assert cond.ref_latent is None and cond.ref_pose is None and cond.local_image is None


def test_local_image_is_the_first_frame_in_training_and_the_reference_at_inference():
    uses = frozenset({"pose", "local_image"})
    _, train = build_conditions(batch(), RecordingEncoders(), uses, training=True)
    latents, infer = build_conditions(batch(), RecordingEncoders(), uses, training=False)
    assert torch.allclose(train.local_image, torch.full_like(train.local_image, 0.25))  # (-0.5 + 1) / 2
    assert torch.allclose(infer.local_image, torch.full_like(infer.local_image, 0.75))  # (0.5 + 1) / 2
    assert latents is None
    # local_image_training="reference": training sees what inference sees.
    _, train = build_conditions(
        batch(), RecordingEncoders(), uses, training=True, local_image_training="reference"
    )
    assert torch.equal(train.local_image, infer.local_image)


def test_temporal_choice_builds_its_own_settings():
    from unianimate.models.temporal_mamba import TemporalMamba
    from unianimate.models.unet3d import UNet3D

    unet = UNet3D(
        base_channels=32,
        channel_mult=(1,),
        attention_levels=(),
        num_res_blocks=1,
        head_dim=16,
        context_dim=8,
        temporal_in_heads=2,
        temporal=MambaTemporal(d_state=4, bidirectional=False),
    )
    assert isinstance(unet.temporal_in, TemporalMamba) and unet.temporal_in.mamba_reversed is None
    assert unet.temporal_in.mamba.A_log.shape[-1] == 4


def test_weight_decay_skips_biases_norms_and_mamba_state_parameters():
    from unianimate.models.temporal_mamba import TemporalMamba
    from unianimate.optim import parameter_groups

    module = TemporalMamba(8, d_state=4)
    decay, no_decay = parameter_groups(module, 0.1)
    names = {id(p): n for n, p in module.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"mamba.A_log", "mamba.D", "norm.weight", "norm.bias", "proj_out.bias"} <= skipped
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
