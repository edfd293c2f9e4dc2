"""``--model.init_weights``: every accepted source, the key report, and the two parity checks
(diffusers SD-2.x inflation; a release-style ``.pth`` of the tiny official fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_official_parity import CASES, _run

from unianimate.models.init_weights import KeyReport, load_init_weights, match_keys
from unianimate.models.state_dict_adapter import (
    build_from_config_json,
    official_key_to_ours,
    official_to_ours,
)
from unianimate.models.temporal import MambaTemporal
from unianimate.models.temporal_mamba import TemporalMamba
from unianimate.models.temporal_transformer import TemporalTransformer
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_unianimate"
pytestmark = pytest.mark.usefixtures("single_thread")


def _fixture(name: str = "tiny") -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    cfg = json.loads((FIXTURES / f"{name}_config.json").read_text())
    sd = {k: v.float() for k, v in load_file(FIXTURES / f"{name}_state_dict.safetensors").items()}
    return cfg, sd, load_file(FIXTURES / f"{name}_cases.safetensors")


def _official_model(cfg: dict, temporal: str = "transformer") -> UniAnimate:
    model = build_from_config_json(cfg)
    if temporal == "mamba":  # the same model with temporal Mamba modules at the 17 positions
        for name, module in list(model.unet.named_modules()):
            if isinstance(module, TemporalTransformer):
                owner, _, attr = name.rpartition(".")
                mamba = MambaTemporal().build(module.norm.num_channels, 1, 1, "sdpa")
                setattr(model.unet.get_submodule(owner) if owner else model.unet, attr, mamba)
    return model.eval()


# ---- (b) the release's .pth ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_release_pth_loads_like_the_adapter_and_reproduces_the_fixture(name: str, tmp_path: Path) -> None:
    cfg, sd, cases = _fixture(name)
    path = tmp_path / "unianimate_release.pth"
    torch.save(sd, path)  # a bare state dict with the official names, like the release
    model = _official_model(cfg)
    report = load_init_weights(model, path, strict=True)
    assert len(report.loaded) == len(sd) and not report.new and not report.unused
    reference = official_to_ours(sd)
    assert model.state_dict().keys() == reference.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    model.set_empty_text(cases["zero_y"])
    for case in CASES[name]:
        torch.testing.assert_close(
            _run(model, cases, f"case{case}"), cases[f"case{case}.out"], atol=1e-4, rtol=1e-4
        )


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": Path("x")}, path)
    with pytest.raises(ValueError, match="cannot read .* as a state dict"):
        load_init_weights(_official_model(_fixture()[0]), path)


def test_vgen_checkpoint_maps_by_name_and_reports_its_extra_modules(tmp_path: Path) -> None:
    """VGen's UNetSD_TFT2V keys (tools/modules/unet/unet_tf2tv.py) are the release's for the shared
    parts; VGen saves ``{"state_dict": ...}``, possibly with a DDP ``module.`` prefix."""
    cfg, sd, _ = _fixture()
    vgen = {f"module.{k}": v for k, v in sd.items() if not k.startswith(("randomref", "dwpose"))}
    vgen["module.motion_embedding.0.weight"] = torch.zeros(32, 2, 3, 3)
    vgen["module.fps_embedding.0.weight"] = torch.zeros(128, 32)
    path = tmp_path / "tft2v.pth"
    torch.save({"state_dict": vgen, "step": 1}, path)
    model = _official_model(cfg)
    report = load_init_weights(model, path)
    groups = report.counts()
    assert groups["source:motion_embedding"] == [0, 0, 1] and groups["source:fps_embedding"] == [0, 0, 1]
    assert groups["pose_encoder"] == [0, 15, 0] and groups["ref_latent_encoder"] == [0, 15, 0]
    assert groups["unet.mid_block.temporal_attn"] == [26, 0, 0]
    assert torch.equal(model.state_dict()["unet.conv_in.weight"], sd["input_blocks.0.0.weight"])
    assert "init_weights:" in report.table() and "source:motion_embedding" in report.table()


def test_our_safetensors_export_and_shape_mismatch_and_strict(tmp_path: Path) -> None:
    cfg, sd, _ = _fixture()
    ours = official_to_ours(sd)
    export = tmp_path / "ema.safetensors"
    save_file({k: v for k, v in ours.items() if not k.startswith("clip_proj")}, str(export))
    model = _official_model(cfg)
    report = load_init_weights(model, export)
    assert report.counts()["clip_proj"] == [0, 4, 0] and len(report.loaded) == len(ours) - 4
    assert torch.equal(model.state_dict()["unet.conv_out.weight"], ours["unet.conv_out.weight"])
    with pytest.raises(ValueError, match=r"strict.*4 newly initialised"):
        load_init_weights(_official_model(cfg), export, strict=True)
    bad = dict(ours, **{"unet.conv_in.weight": torch.zeros(32, 4, 3, 3)})
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError) as err:
        load_init_weights(_official_model(cfg), tmp_path / "bad.safetensors")
    assert str(err.value).count("\n") == 0
    assert "unet.conv_in.weight has shape [32, 4, 3, 3] there, the model expects [32, 12, 3, 3]" in str(
        err.value
    )


# ---- temporal Mamba from the release's transformer weights -------------------------------------


@torch.no_grad()
def test_mamba_model_takes_the_spatial_weights_and_starts_as_identity(tmp_path: Path) -> None:
    cfg, sd, cases = _fixture("tiny_attn")
    path = tmp_path / "release.pth"
    torch.save(sd, path)
    mamba = _official_model(cfg, "mamba")
    report = load_init_weights(mamba, path)
    groups = report.counts()
    # The release's temporal transformers: unused; the Mamba modules in their place: new.
    for group in ("unet.temporal_in", "unet.down_blocks.*.temporal_attn", "unet.mid_block.temporal_attn"):
        loaded, new, unused = groups[group]
        assert loaded == 0 and new > 0 and unused == 26, group
    assert groups["unet.down_blocks.*.spatial_attn"][:2] == [26, 0]
    # Newly initialised: exactly the temporal Mamba modules' tensors.
    mamba_keys = {
        f"unet.{name}.{key}"
        for name, module in mamba.unet.named_modules()
        if isinstance(module, TemporalMamba)
        for key in module.state_dict()
    }
    assert set(report.new) == mamba_keys and len(report.loaded) == len(sd) - len(report.unused)
    # The same release weights with every temporal transformer switched to the identity: equal outputs.
    reference = _official_model(cfg)
    load_init_weights(reference, path)
    for module in reference.modules():
        if isinstance(module, TemporalTransformer):
            module.proj_out.weight.zero_()
            module.proj_out.bias.zero_()
    for m in (mamba, reference):
        m.set_empty_text(cases["zero_y"])
    out_mamba, out_ref = _run(mamba, cases, "caseE"), _run(reference, cases, "caseE")
    torch.testing.assert_close(out_mamba, out_ref, atol=1e-5, rtol=1e-5)
    assert (out_mamba - _run(_official_model(cfg), cases, "caseE")).abs().max() > 0.1


def _full_key_report(temporal: str) -> KeyReport:
    """The release's full key list (``full_keys.tsv``) against the paper-size model, on the meta device."""
    rows = [
        line.split("\t")
        for line in (FIXTURES / "full_keys.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    with torch.device("meta"):
        sd = {key: torch.empty(json.loads(shape)) for key, shape, _ in rows}
        model = UniAnimate(UNet3D(temporal=temporal))
    report = KeyReport("full_keys.tsv", "release key list")
    match_keys(model, {official_key_to_ours(k): v for k, v in sd.items()}, [], report)
    print(report.table())
    return report


def test_full_release_key_list_into_the_transformer_and_the_mamba_model() -> None:
    transformer = _full_key_report("transformer")
    assert len(transformer.loaded) == 1544 and not transformer.new and not transformer.unused
    mamba = _full_key_report("mamba")
    # 17 temporal transformers x 26 tensors: unused; everything else loads.
    assert len(mamba.unused) == 17 * 26 and len(mamba.loaded) == 1544 - 17 * 26
    assert {g for g, (_, new, _) in mamba.counts().items() if new} == {
        g for g, (_, _, unused) in mamba.counts().items() if unused
    }


# ---- (a) diffusers SD-2.x inflation ---------------------------------------------------------


def _tiny_sd21_unet(path: Path):
    """A tiny UNet2DConditionModel in the SD-2.1 layout (linear projections, 16-wide heads given as
    ``attention_head_dim`` head counts, as SD-2.1's config does), random weights, saved with save_pretrained."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        cross_attention_dim=48,
        use_linear_projection=True,
        norm_num_groups=32,
    )
    with torch.no_grad():
        for p in unet.parameters():  # no zero-initialised layers: every weight matters
            p.add_(0.05 * torch.randn_like(p))
    unet.save_pretrained(path)
    return UNet2DConditionModel.from_pretrained(path).eval()


@torch.no_grad()
def test_diffusers_unet_inflated_equals_diffusers_frame_by_frame(tmp_path: Path) -> None:
    theirs = _tiny_sd21_unet(tmp_path / "sd21_unet")
    unet = UNet3D(
        base_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=2,
        attention_levels=(0,),
        head_dim=16,
        context_dim=48,
        temporal_in_heads=2,
        dropout=0.0,
    )
    model = UniAnimate(unet, context_dim=48).eval()
    report = load_init_weights(model, tmp_path / "sd21_unet")
    groups = report.counts()
    for group in ("unet.temporal_in", "unet.mid_block.temporal_attn", "unet.down_blocks.*.temporal_attn"):
        assert groups[group][0] == 0 and groups[group][1] > 0, group
    assert groups["unet.down_blocks.*.resnet.temporal_conv"][:2] == [0, 4 * 16]  # 4 res blocks
    assert groups["pose_encoder"] == [0, 15, 0] and not report.unused
    assert "8 pose channels zero" in report.table()
    conv_in = model.unet.conv_in.weight
    assert torch.equal(conv_in[:, :4], theirs.conv_in.weight) and not conv_in[:, 4:].any()

    b, f, h, w = 2, 3, 8, 8
    torch.manual_seed(1)
    x = torch.randn(b, 12, f, h, w)  # the pose channels are random: their weights must be zero
    t = torch.tensor([999, 37])
    context = torch.randn(b, 7, 48)
    ours = model.unet(x, t, context)
    for frame in range(f):
        expected = theirs(x[:, :4, frame], t, encoder_hidden_states=context).sample
        torch.testing.assert_close(ours[:, :, frame], expected, atol=1e-5, rtol=1e-5)


def test_diffusers_head_width_mismatch_is_refused(tmp_path: Path) -> None:
    _tiny_sd21_unet(tmp_path / "sd21_unet")
    unet = UNet3D(
        base_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=2,
        attention_levels=(0,),
        head_dim=8,
        context_dim=48,
    )
    with pytest.raises(ValueError, match="head width 16 at 32 channels, the model's is 8"):
        load_init_weights(UniAnimate(unet, context_dim=48), tmp_path / "sd21_unet")
