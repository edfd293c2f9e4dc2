"""Our UniAnimate reproduces the official forward on the golden fixtures (fixture README §3-4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unianimate.conditions import Conditions
from unianimate.models.state_dict_adapter import build_from_config_json, official_to_ours
from unianimate.models.unianimate import UniAnimate

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_unianimate"
ATOL = RTOL = 1e-4
CASES = {"tiny": "ABCDEF", "tiny_attn": "ABCDE"}


def _require_fixtures() -> None:
    if not (FIXTURES / "tiny_config.json").exists():
        pytest.skip(f"official UniAnimate fixtures not found at {FIXTURES}")


def _load(name: str, attention: str = "sdpa") -> tuple[UniAnimate, dict[str, torch.Tensor], dict]:
    _require_fixtures()
    cfg = json.loads((FIXTURES / f"{name}_config.json").read_text())
    model = build_from_config_json(cfg, attention=attention)
    model.load_state_dict(
        official_to_ours(load_file(FIXTURES / f"{name}_state_dict.safetensors")), strict=True
    )
    model.eval()
    cases = load_file(FIXTURES / f"{name}_cases.safetensors")
    model.set_empty_text(cases["zero_y"])
    return model, cases, cfg


def _conditions(cases: dict[str, torch.Tensor], case: str) -> Conditions:
    """Official kwargs -> Conditions. ``local_image`` is handled separately (see ``_run``)."""

    def get(name: str) -> torch.Tensor | None:
        return cases.get(f"{case}.{name}")

    dwpose, randomref, image = get("dwpose"), get("randomref"), get("image")
    return Conditions(
        pose=None if dwpose is None else dwpose[:, :, 1:],
        ref_pose=None if dwpose is None else dwpose[:, :, 0],
        ref_latent=None if randomref is None else randomref[:, :, 0],
        clip_embed=None if image is None else image[:, 0],
    )


@torch.no_grad()
def _run(model: UniAnimate, cases: dict[str, torch.Tensor], case: str) -> torch.Tensor:
    x, t = cases[f"{case}.x"], cases[f"{case}.t"]
    cond = _conditions(cases, case)
    local_image = cases.get(f"{case}.local_image")
    if local_image is None:
        return model(x, t, cond)
    if torch.equal(local_image, local_image[:, :, :1].expand_as(local_image)):
        return model(x, t, Conditions(**{**cond.__dict__, "local_image": local_image[:, :, 0]}))
    # The stored local_image streams differ from frame to frame (the official forward allows it), while
    # Conditions.first_frame is one picture: feed the per-frame features through the same assembly.
    concat = model.concat_features(cond, x) + model.local_image_encoder(local_image)
    return model.denoise(x, t, concat, model.reference(cond, x), model.context(cond, x.shape[0]))


@pytest.mark.parametrize("name,case", [(n, f"case{c}") for n, cs in CASES.items() for c in cs])
def test_official_case(name: str, case: str) -> None:
    model, cases, _ = _load(name)
    out = _run(model, cases, case)
    torch.testing.assert_close(out, cases[f"{case}.out"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_count(name: str) -> None:
    model, _, cfg = _load(name)
    assert sum(p.numel() for p in model.parameters()) == cfg["num_parameters"]
    assert len(model.state_dict()) == cfg["num_state_dict_tensors"]


@pytest.mark.parametrize("name", list(CASES))
def test_math_attention_matches_sdpa(name: str) -> None:
    sdpa, cases, _ = _load(name, attention="sdpa")
    math, _, _ = _load(name, attention="math")
    out_sdpa, out_math = _run(sdpa, cases, "caseE"), _run(math, cases, "caseE")
    torch.testing.assert_close(out_math, out_sdpa, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_math, cases["caseE.out"], atol=ATOL, rtol=RTOL)


@torch.no_grad()
def test_trace_time_embedding_and_unet_input() -> None:
    """Intermediate tensors of caseE (tiny): the time MLP and the assembled UNet input."""
    from einops import rearrange

    from unianimate.models.unet3d import timestep_embedding

    model, cases, _ = _load("tiny")
    trace = load_file(FIXTURES / "tiny_trace.safetensors")
    t = cases["caseE.t"]
    emb = model.unet.time_embed(timestep_embedding(t, model.unet.base_channels))
    torch.testing.assert_close(emb, trace["caseE.time_embed"], atol=1e-5, rtol=1e-5)
    x = cases["caseE.x"]
    cond = _conditions(cases, "caseE")
    concat = model.concat_features(cond, x) + model.local_image_encoder(cases["caseE.local_image"])
    unet_in = torch.cat([model.reference(cond, x), torch.cat([x, concat], dim=1)], dim=2)
    torch.testing.assert_close(
        rearrange(unet_in, "b c f h w -> (b f) c h w"), trace["caseE.unet_input"], atol=1e-5, rtol=1e-5
    )
