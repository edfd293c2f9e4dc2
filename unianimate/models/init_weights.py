"""Start a denoiser from pretrained weights (``--model.init_weights PATH``, SPEC §7).

Accepted, told apart by what the path holds:

- the release's ``unianimate_16f_32f_non_ema_223000.pth``: a bare state dict with the official key
  names, read with ``torch.load(weights_only=True)`` and mapped by ``state_dict_adapter``;
- a VGen / TF-T2V UNet checkpoint (``UNetSD_TFT2V``, VGen ``tools/modules/unet/unet_tf2tv.py``):
  the release grew out of it and shares its key names (``time_embed``, ``input_blocks``,
  ``middle_block``, ``output_blocks``, ``out``, ``local_image_embedding`` ...), so it goes through
  the same adapter; its keys with no counterpart here (``motion_embedding``, ``fps_embedding``, a
  ``{"state_dict": ...}`` wrapper's extras) are reported unused;
- this project's safetensors exports (denoiser, EMA, merged LoRA) or a Lightning ``.ckpt``;
- a diffusers SD-2.x ``UNet2DConditionModel`` folder (or a pipeline folder with ``unet/``), inflated
  to video: spatial layers copied, every temporal module left as built (the identity: zero-initialised
  output projections), the input conv's latent channels copied and its pose channels zero.

The result is a :class:`KeyReport`: loaded / newly initialised / unused keys grouped by module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from unianimate.models.state_dict_adapter import official_key_to_ours

# Top-level modules of ``UniAnimate``: a state dict whose keys start with one of these is ours.
OUR_ROOTS = (
    "unet.",
    "clip_proj.",
    "pose_encoder.",
    "local_image_encoder.",
    "ref_latent_encoder.",
    "ref_pose_encoder.",
)
OFFICIAL_ROOTS = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.")
WRAPPER_PREFIXES = ("module.", "model.", "denoiser.", "_forward_module.")


@dataclass
class KeyReport:
    """What an initialisation did. Keys are the model's (ours) unless marked as the source's."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, list[int]]:
        """group -> [loaded, new, unused] tensor counts, in first-seen order."""
        table: dict[str, list[int]] = {}
        for column, keys in enumerate((self.loaded, self.new, self.unused)):
            for key in keys:
                table.setdefault(key_group(key), [0, 0, 0])[column] += 1
        return table

    def table(self) -> str:
        rows = self.counts()
        width = max([len("module"), *map(len, rows)])
        lines = [
            f"init_weights: {self.source} ({self.kind})",
            f"{'module':<{width}}  {'loaded':>7}  {'new':>7}  {'unused':>7}",
        ]
        lines += [f"{g:<{width}}  {a:>7}  {b:>7}  {c:>7}" for g, (a, b, c) in rows.items()]
        total = f"{len(self.loaded):>7}  {len(self.new):>7}  {len(self.unused):>7}"
        lines += [f"{'total (tensors)':<{width}}  {total}", *self.notes]
        return "\n".join(lines)


def key_group(key: str) -> str:
    """The module a key belongs to, indices starred: ``unet.down_blocks.*.temporal_attn``,
    ``unet.up_blocks.*.resnet.temporal_conv``, ``pose_encoder``; a source key no name maps to
    keeps its own name with the prefix ``source:``."""
    if key.startswith("source:"):
        parts = ["*" if p.isdigit() else p for p in key.removeprefix("source:").split(".")[:-1]]
        return "source:" + parts[0]
    parts = ["*" if p.isdigit() else p for p in key.replace(".base_layer", "").split(".")[:-1]]
    if parts[0] != "unet":
        return parts[0]
    depth = {"down_blocks": 4, "up_blocks": 4, "mid_block": 3}.get(parts[1], 2)
    head, rest = parts[:depth], parts[depth:]
    if rest[:1] == ["temporal_conv"]:
        head.append("temporal_conv")
    return ".".join(head)


# ---- reading the sources ---------------------------------------------------------------------


def _unwrap(sd: Mapping) -> dict[str, Tensor]:
    """A bare tensor dict from a ``{"state_dict": ...}`` wrapper, without DDP / Lightning prefixes."""
    for wrapper in ("state_dict", "model", "module"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    tensors = {k: v for k, v in sd.items() if isinstance(v, Tensor)}
    for prefix in WRAPPER_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
    # Lightning checkpoints: the denoiser's keys only (encoders are never saved; EMA is separate).
    if any(k.startswith("denoiser.") for k in tensors):
        tensors = {k.removeprefix("denoiser."): v for k, v in tensors.items() if k.startswith("denoiser.")}
    return tensors


def _from_official(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    ours, unmapped = {}, []
    for key, value in sd.items():
        try:
            ours[official_key_to_ours(key)] = value
        except KeyError:
            unmapped.append("source:" + key)
    return ours, unmapped


_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "time_emb_proj": "time_proj",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "skip",
}
_TOP = {
    "time_embedding.linear_1": "unet.time_embed.linear_1",
    "time_embedding.linear_2": "unet.time_embed.linear_2",
    "conv_in": "unet.conv_in",
    "conv_norm_out": "unet.norm_out",
    "conv_out": "unet.conv_out",
}


def _transformer_key(rest: str) -> str:
    """diffusers ``Transformer2DModel`` (one block) -> our ``SpatialTransformer``."""
    rest = re.sub(r"^transformer_blocks\.0\.", "block.", rest)
    rest = rest.replace("attn1.to_out.0.", "attn1.to_out.").replace("attn2.to_out.0.", "attn2.to_out.")
    return rest.replace("ff.net.0.proj.", "ff.proj_in.").replace("ff.net.2.", "ff.proj_out.")


def diffusers_key_to_ours(key: str, layers_per_block: int) -> str | None:
    """A ``UNet2DConditionModel`` key -> ours, or None. Encoder level i holds ``layers_per_block``
    res blocks then a downsampler; decoder level i holds one more res block, the last carrying the upsampler."""
    n = layers_per_block
    for theirs, ours in _TOP.items():
        if key.startswith(theirs + "."):
            return ours + key[len(theirs) :]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"unet.down_blocks.{int(m[1]) * (n + 1) + n}.conv.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"unet.up_blocks.{int(m[1]) * (n + 1) + n}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        per_level = n + 1
        index = int(m[2]) * per_level + int(m[4])
        prefix = f"unet.{m[1]}_blocks.{index}"
        return _part(prefix, m[3], m[5])
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        name = {"resnets": f"resnet_{int(m[2]) + 1}", "attentions": "spatial_attn"}[m[1]]
        if m[1] == "attentions" and m[2] != "0":
            return None
        return f"unet.mid_block.{name}." + (
            _resnet_key(m[3]) if m[1] == "resnets" else _transformer_key(m[3])
        )
    return None


def _resnet_key(rest: str) -> str:
    layer, _, tail = rest.partition(".")
    return f"{_RESNET.get(layer, layer)}.{tail}"


def _part(prefix: str, kind: str, rest: str) -> str:
    if kind == "resnets":
        return f"{prefix}.resnet.{_resnet_key(rest)}"
    return f"{prefix}.spatial_attn.{_transformer_key(rest)}"


def _diffusers_folder(path: Path) -> Path | None:
    for folder in (path, path / "unet"):
        config = folder / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("_class_name") == "UNet2DConditionModel":
            return folder
    return None


def _check_diffusers_config(config: Mapping, model: nn.Module, path: Path) -> None:
    """Settings that change the maths without changing any weight's shape: refuse, in one line."""
    fixed = {
        "resnet_time_scale_shift": "default",
        "time_embedding_type": "positional",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
        "norm_num_groups": 32,
    }
    for name, expected in fixed.items():
        if config.get(name, expected) != expected:
            raise ValueError(
                f"init_weights {path}: diffusers UNet has {name}={config[name]!r}, expected {expected!r}"
            )
    heads = config.get("num_attention_heads") or config["attention_head_dim"]  # diffusers' naming quirk
    channels = list(config["block_out_channels"])
    heads = [heads] * len(channels) if isinstance(heads, int) else list(heads)
    theirs = {c: c // h for c, h in zip(channels, heads)}
    for module in _spatial(model):
        c, width = module.proj_in.in_features, module.proj_in.out_features // module.block.attn1.heads
        if c in theirs and theirs[c] != width:
            raise ValueError(
                f"init_weights {path}: diffusers head width {theirs[c]} at {c} channels, the model's is {width}"
            )


def _spatial(model: nn.Module) -> list[nn.Module]:
    from unianimate.models.spatial_transformer import SpatialTransformer

    return [m for m in model.modules() if isinstance(m, SpatialTransformer)]


def _from_diffusers(
    folder: Path, model: nn.Module, shapes: Mapping[str, torch.Size]
) -> tuple[dict, list, list]:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder, local_files_only=True)
    _check_diffusers_config(unet.config, model, folder)
    ours, unmapped, notes = {}, [], []
    for key, value in unet.state_dict().items():
        name = diffusers_key_to_ours(key, unet.config.layers_per_block)
        if name is None:
            unmapped.append("source:" + key)
            continue
        target = shapes.get(name)
        if target is not None and value.ndim == 4 and len(target) == 2 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]  # SD 1.x conv projections of the spatial transformers
        ours[name] = value
    # Inflation of the input conv: the latent channels come first in the UNet input (``UniAnimate.denoise``).
    conv_in, target = ours.get("unet.conv_in.weight"), shapes.get("unet.conv_in.weight")
    if (
        conv_in is not None
        and target is not None
        and conv_in.shape[1] < target[1]
        and conv_in.shape[0] == target[0]
    ):
        inflated = conv_in.new_zeros(target)
        inflated[:, : conv_in.shape[1]] = conv_in
        ours["unet.conv_in.weight"] = inflated
        notes.append(
            f"unet.conv_in.weight: {conv_in.shape[1]} latent input channels loaded, "
            f"{target[1] - conv_in.shape[1]} pose channels zero"
        )
    return ours, unmapped, notes


def read_weights(path: str | Path, model: nn.Module) -> tuple[dict[str, Tensor], list[str], str, list[str]]:
    """(tensors with our names, source keys no name maps to, kind, notes) for ``model``."""
    path = Path(path).expanduser()
    shapes = {k.replace(".base_layer", ""): v.shape for k, v in model.state_dict().items()}
    if path.is_dir():
        folder = _diffusers_folder(path)
        if folder is None:
            raise ValueError(
                f"init_weights: '{path}' is a folder but not a diffusers UNet2DConditionModel folder "
                "(expected config.json with _class_name UNet2DConditionModel, here or in unet/)"
            )
        ours, unmapped, notes = _from_diffusers(folder, model, shapes)
        return ours, unmapped, "diffusers UNet2DConditionModel, inflated", notes
    if not path.is_file():
        raise FileNotFoundError(f"init_weights: no file or folder at '{path}'")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = _unwrap(load_file(str(path)))
    else:
        try:
            sd = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # pickle errors have many types; the user needs the file named
            raise ValueError(
                f"init_weights: cannot read '{path}' as a state dict ({type(err).__name__}: {err})"
            ) from None
    if any(k.startswith(OFFICIAL_ROOTS) for k in sd):
        ours, unmapped = _from_official(sd)
        return ours, unmapped, "official UniAnimate / VGen key names, through the state-dict adapter", []
    if any(k.startswith(OUR_ROOTS) for k in sd):
        ours = {k: v for k, v in sd.items() if k.startswith(OUR_ROOTS)}
        return ours, ["source:" + k for k in sd if k not in ours], "this project's names", []
    raise ValueError(
        f"init_weights: '{path}' holds neither this project's keys (unet.*) nor the release's (input_blocks.*); "
        f"first keys: {list(sd)[:3]}"
    )


_TEMPORAL_UNIT = re.compile(
    r"unet\.(temporal_in|mid_block\.temporal_attn|(down|up)_blocks\.\d+\.temporal_attn)\."
)


def _temporal_unit(key: str) -> str | None:
    m = _TEMPORAL_UNIT.match(key)
    return m[0] if m else None


def match_keys(
    model: nn.Module, ours: Mapping[str, Tensor], unmapped: list[str], report: KeyReport, strict: bool = False
) -> dict[str, str]:
    """Fill ``report`` for loading ``ours`` into ``model``; returns {our name: the model's state-dict key}
    of the keys to load. A shape mismatch is a one-line error naming the key and both shapes;
    ``strict`` makes newly initialised or unused keys an error too."""
    # LoRA-wrapped layers (peft) hold the base weight as ``<layer>.base_layer.weight``.
    params = model.state_dict()
    actual = {k.replace(".base_layer", ""): k for k in params if ".lora_" not in k}
    # A temporal module loads whole or not at all: the release's temporal transformer shares the
    # names ``norm`` and ``proj_out`` with a temporal Mamba but is a different module.
    other_kind = {unit for name in ours if (unit := _temporal_unit(name)) and name not in actual}
    report.unused += [k for k in ours if _temporal_unit(k) in other_kind]
    ours = {k: v for k, v in ours.items() if _temporal_unit(k) not in other_kind}
    for name, value in ours.items():
        if name not in actual:
            report.unused.append(name)
        elif value.shape != params[actual[name]].shape:
            raise ValueError(
                f"init_weights {report.source}: {name} has shape {list(value.shape)} there, "
                f"the model expects {list(params[actual[name]].shape)}"
            )
    report.unused += unmapped
    report.loaded = [k for k in actual if k in ours]
    report.new = [k for k in actual if k not in ours]
    if strict and (report.new or report.unused):
        raise ValueError(
            f"init_weights {report.source} (strict): {len(report.new)} newly initialised keys "
            f"(first: {report.new[:1]}), {len(report.unused)} unused (first: {report.unused[:1]})"
        )
    return {k: actual[k] for k in report.loaded}


@torch.no_grad()
def load_init_weights(model: nn.Module, path: str | Path, strict: bool = False) -> KeyReport:
    """Copy the weights at ``path`` into ``model`` (a ``UniAnimate``, possibly with LoRA layers) and
    return the key report (see :func:`match_keys` for the errors)."""
    ours, unmapped, kind, notes = read_weights(path, model)
    report = KeyReport(str(path), kind, notes=notes)
    targets = match_keys(model, ours, unmapped, report, strict)
    params = model.state_dict()
    for name, key in targets.items():
        params[key].copy_(ours[name])
    return report
