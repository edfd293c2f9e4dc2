"""Key mapping between the released UniAnimate checkpoint and our module names (STYLE §12).

The release (``UNetSD_UniAnimate``, ``unianimate_16f_32f_non_ema_223000.pth``) stores a bare
state dict with the official module paths; ``official_to_ours`` / ``ours_to_official`` map every
key exactly once. Tensors are passed through unchanged (all shapes already agree).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

# (official suffix prefix, our suffix prefix) tables for the repeated sub-modules.
_LEAF = [("", "")]
_RESBLOCK = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "skip."),
    ("temopral_conv.conv1.0.", "temporal_conv.layers.0.norm."),  # "temopral" (sic) as released
    ("temopral_conv.conv1.2.", "temporal_conv.layers.0.conv."),
    *[(f"temopral_conv.conv{k + 1}.0.", f"temporal_conv.layers.{k}.norm.") for k in (1, 2, 3)],
    *[(f"temopral_conv.conv{k + 1}.3.", f"temporal_conv.layers.{k}.conv.") for k in (1, 2, 3)],
]
_TRANSFORMER = [
    ("norm.", "norm."),
    ("proj_in.", "proj_in."),
    ("proj_out.", "proj_out."),
    *[(f"transformer_blocks.0.norm{k}.", f"block.norm{k}.") for k in (1, 2, 3)],
    *[(f"transformer_blocks.0.attn{k}.to_{p}.", f"block.attn{k}.to_{p}.") for k in (1, 2) for p in "qkv"],
    *[(f"transformer_blocks.0.attn{k}.to_out.0.", f"block.attn{k}.to_out.") for k in (1, 2)],
    ("transformer_blocks.0.ff.net.0.proj.", "block.ff.proj_in."),
    ("transformer_blocks.0.ff.net.2.", "block.ff.proj_out."),
]
_FRAME_TRANSFORMER = [
    ("layers.0.0.norm.", "norm."),
    ("layers.0.0.fn.to_qkv.", "to_qkv."),
    ("layers.0.0.fn.to_out.0.", "to_out."),
    ("layers.0.1.net.0.0.", "ff_in."),
    ("layers.0.1.net.2.", "ff_out."),
]
_PIXEL_CONVS = [("0.", "conv1."), ("3.", "conv2."), ("5.", "conv3.")]
_LATENT_CONVS = [("0.", "conv1."), ("2.", "conv2."), ("4.", "conv3.")]

# Fixed top-level prefixes: (official, ours, table for the rest of the key).
_FIXED = [
    ("time_embed.0.", "unet.time_embed.linear_1.", _LEAF),
    ("time_embed.2.", "unet.time_embed.linear_2.", _LEAF),
    ("pre_image_condition.0.", "clip_proj.linear_1.", _LEAF),
    ("pre_image_condition.2.", "clip_proj.linear_2.", _LEAF),
    ("local_image_embedding.", "local_image_encoder.", _PIXEL_CONVS),
    ("local_image_embedding_after.", "local_image_encoder.frame_transformer.", _FRAME_TRANSFORMER),
    ("dwpose_embedding.", "pose_encoder.", _PIXEL_CONVS),
    ("dwpose_embedding_after.", "pose_encoder.frame_transformer.", _FRAME_TRANSFORMER),
    ("randomref_pose2_embedding.", "ref_pose_encoder.", _PIXEL_CONVS),
    ("randomref_pose2_embedding_after.", "ref_pose_encoder.frame_transformer.", _FRAME_TRANSFORMER),
    ("randomref_embedding2.", "ref_latent_encoder.", _LATENT_CONVS),
    ("randomref_embedding_after2.", "ref_latent_encoder.frame_transformer.", _FRAME_TRANSFORMER),
    ("input_blocks.0.0.", "unet.conv_in.", _LEAF),
    ("input_blocks.0.1.", "unet.temporal_in.", _TRANSFORMER),
    ("middle_block.0.", "unet.mid_block.resnet_1.", _RESBLOCK),
    ("middle_block.1.", "unet.mid_block.spatial_attn.", _TRANSFORMER),
    ("middle_block.2.", "unet.mid_block.temporal_attn.", _TRANSFORMER),
    ("middle_block.3.", "unet.mid_block.resnet_2.", _RESBLOCK),
    ("out.0.", "unet.norm_out.", _LEAF),
    ("out.2.", "unet.conv_out.", _LEAF),
]
# Entries of an encoder / decoder block: official index -> (our name, table).
_BLOCK_PARTS = {
    "0": ("resnet", _RESBLOCK),
    "1": ("spatial_attn", _TRANSFORMER),
    "2": ("temporal_attn", _TRANSFORMER),
}


def _swap(rest: str, table: list[tuple[str, str]], reverse: bool, key: str) -> str:
    for official, ours in table:
        src, dst = (ours, official) if reverse else (official, ours)
        tail = rest[len(src) :]
        if rest.startswith(src) and tail in ("weight", "bias"):
            return dst + tail
    raise KeyError(f"no mapping for state-dict key {key!r}")


def official_key_to_ours(key: str) -> str:
    for official, ours, table in _FIXED:
        if key.startswith(official):
            return ours + _swap(key[len(official) :], table, False, key)
    if m := re.fullmatch(r"input_blocks\.(\d+)\.op\.(weight|bias)", key):
        return f"unet.down_blocks.{int(m[1]) - 1}.conv.{m[2]}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.([012])\.(.+)", key):
        name, table = _BLOCK_PARTS[m[2]]
        return f"unet.down_blocks.{int(m[1]) - 1}.{name}." + _swap(m[3], table, False, key)
    if m := re.fullmatch(r"output_blocks\.(\d+)\.[13]\.conv\.(weight|bias)", key):
        # The upsampler is the last entry: index 1 without attention, 3 with it.
        return f"unet.up_blocks.{m[1]}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.([012])\.(.+)", key):
        name, table = _BLOCK_PARTS[m[2]]
        return f"unet.up_blocks.{m[1]}.{name}." + _swap(m[3], table, False, key)
    raise KeyError(f"no mapping for official state-dict key {key!r}")


def our_key_to_official(key: str, up_blocks_with_attention: set[int]) -> str:
    # Longest prefix first: "pose_encoder.frame_transformer." before "pose_encoder.".
    for official, ours, table in sorted(_FIXED, key=lambda row: -len(row[1])):
        if key.startswith(ours):
            return official + _swap(key[len(ours) :], table, True, key)
    if m := re.fullmatch(r"unet\.down_blocks\.(\d+)\.conv\.(weight|bias)", key):
        return f"input_blocks.{int(m[1]) + 1}.op.{m[2]}"
    parts = {name: (index, table) for index, (name, table) in _BLOCK_PARTS.items()}
    if m := re.fullmatch(r"unet\.down_blocks\.(\d+)\.(resnet|spatial_attn|temporal_attn)\.(.+)", key):
        index, table = parts[m[2]]
        return f"input_blocks.{int(m[1]) + 1}.{index}." + _swap(m[3], table, True, key)
    if m := re.fullmatch(r"unet\.up_blocks\.(\d+)\.upsample\.conv\.(weight|bias)", key):
        index = 3 if int(m[1]) in up_blocks_with_attention else 1
        return f"output_blocks.{m[1]}.{index}.conv.{m[2]}"
    if m := re.fullmatch(r"unet\.up_blocks\.(\d+)\.(resnet|spatial_attn|temporal_attn)\.(.+)", key):
        index, table = parts[m[2]]
        return f"output_blocks.{m[1]}.{index}." + _swap(m[3], table, True, key)
    raise KeyError(f"no mapping for our state-dict key {key!r} (only the temporal-transformer variant maps)")


def _remap(sd: Mapping[str, Tensor], keys: dict[str, str]) -> dict[str, Tensor]:
    if len(set(keys.values())) != len(keys):
        raise ValueError("state-dict key mapping is not one-to-one")
    return {keys[k]: v for k, v in sd.items()}


def official_to_ours(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Released (bare, unprefixed) UniAnimate state dict -> ``UniAnimate`` state dict."""
    return _remap(sd, {k: official_key_to_ours(k) for k in sd})


def ours_to_official(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``UniAnimate`` state dict -> the release's key names."""
    with_attention = {int(m[1]) for k in sd if (m := re.match(r"unet\.up_blocks\.(\d+)\.spatial_attn\.", k))}
    return _remap(sd, {k: our_key_to_official(k, with_attention) for k in sd})


def build_from_config_json(cfg: Mapping[str, Any], attention: str = "sdpa") -> UniAnimate:
    """Our model for an official ``UNetSD_UniAnimate`` configuration (the fixtures' ``*_config.json``:
    ``constructor`` arguments + ``config_object.video_compositions``)."""
    args = cfg["constructor"]
    compositions = cfg["config_object"]["video_compositions"]
    dim, mult = args["dim"], list(args["dim_mult"])
    scales = [float(s) for s in args["attn_scales"]]
    unet = UNet3D(
        in_channels=args["in_dim"] + args["concat_dim"],
        out_channels=args["out_dim"],
        base_channels=dim,
        channel_mult=tuple(mult),
        num_res_blocks=args["num_res_blocks"],
        attention_levels=tuple(i for i in range(len(mult)) if 1.0 / 2**i in scales),
        head_dim=args["head_dim"],
        context_dim=args["context_dim"],
        temporal_in_heads=args["num_heads"] or dim // 32,
        dropout=args["dropout"],
        attention=attention,  # type: ignore[arg-type]
    )
    return UniAnimate(
        unet,
        context_dim=args["context_dim"],
        num_clip_tokens=args["num_tokens"],
        pose_channels=args["concat_dim"],
        ref_channels=args["concat_dim"] + args["in_dim"],
        local_image_stream="local_image" in compositions,
        reference_guidance="randomref" in compositions,
        clip_tokens="image" in compositions,
    )
