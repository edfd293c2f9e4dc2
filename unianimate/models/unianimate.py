"""The whole UniAnimate denoiser: condition encoders + CLIP-token MLP + video UNet (SPEC §2).

Semantics follow the release's ``UNetSD_UniAnimate.forward`` (fixture README §4): the reference
guidance is prepended as frame 0, pose (+ first-frame) features are channel-concatenated to the
noisy latent, the context is the empty-text tokens followed by the CLIP image tokens, and the
output's frame 0 is dropped. The output is a v-prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from unianimate.conditions import Conditions
from unianimate.models.condition_encoders import LatentEncoder, PixelEncoder
from unianimate.models.unet3d import UNet3D

EMPTY_TEXT_TOKENS = 77


class ClipTokenMLP(nn.Module):
    """Pooled CLIP image embedding -> ``num_tokens`` context tokens (release: ``pre_image_condition``)."""

    def __init__(self, clip_dim: int, context_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.linear_1 = nn.Linear(clip_dim, context_dim)
        self.linear_2 = nn.Linear(context_dim, num_tokens * context_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: b d_clip -> b n d (token j = channels j*d ... (j+1)*d - 1)."""
        y = self.linear_2(F.silu(self.linear_1(x)))
        return y.view(x.shape[0], self.num_tokens, -1)


def _zero_dropped(x: Tensor, drop: Tensor | None) -> Tensor:
    """Exact zeros for the samples where ``drop`` (b,) is True."""
    if drop is None:
        return x
    mask = drop.to(device=x.device, dtype=torch.bool).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(mask, torch.zeros((), dtype=x.dtype, device=x.device), x)


class UniAnimate(nn.Module):
    """Denoiser ``(x_t, t, Conditions) -> v``. ``unet`` is built outside (LightningCLI nests it).

    ``local_image_stream``: the release's pixel image encoder ("local_image"): in training it sees the
    clip's first frame, at inference the reference image (see ``unianimate.conditions.build_conditions``).
    ``reference_guidance``: reference latent + reference pose encoders and the extra frame 0; without
    it the UNet runs on the f frames only. ``reference_pose``: the reference pose encoder inside the
    reference guidance (off: the guidance is the reference latent alone, the paper's "w/o reference
    pose" ablation; a given ``cond.ref_pose`` is then ignored). ``clip_tokens``: the CLIP-token MLP; without it the
    ``num_clip_tokens`` context tokens are always zeros (as in the release without "image").
    The unified first-frame *latent* conditioning is done by the caller on ``x``.
    """

    def __init__(
        self,
        unet: UNet3D,
        context_dim: int = 1024,
        clip_dim: int | None = None,
        num_clip_tokens: int = 4,
        pose_channels: int = 8,
        ref_channels: int = 12,
        local_image_stream: bool = True,
        reference_guidance: bool = True,
        clip_tokens: bool = True,
        reference_pose: bool = True,
    ) -> None:
        super().__init__()
        latent_channels = unet.out_channels
        if unet.in_channels != latent_channels + pose_channels:
            raise ValueError(
                f"unet.in_channels={unet.in_channels} must be latent ({latent_channels}) + pose_channels ({pose_channels})"
            )
        if reference_guidance and ref_channels != unet.in_channels:
            raise ValueError(f"ref_channels={ref_channels} must equal unet.in_channels={unet.in_channels}")
        if unet.context_dim != context_dim:
            raise ValueError(f"context_dim={context_dim} differs from unet.context_dim={unet.context_dim}")
        backend = unet.attention
        hidden = 4 * pose_channels  # every condition encoder is 4 x concat_dim wide in the release
        self.context_dim = context_dim
        self.num_clip_tokens = num_clip_tokens
        self.pose_channels = pose_channels

        self.unet = unet
        self.clip_proj = (
            ClipTokenMLP(clip_dim or context_dim, context_dim, num_clip_tokens) if clip_tokens else None
        )
        self.pose_encoder = PixelEncoder(pose_channels, hidden, backend)
        self.local_image_encoder = (
            PixelEncoder(pose_channels, hidden, backend) if local_image_stream else None
        )
        if reference_guidance:
            self.ref_latent_encoder = LatentEncoder(latent_channels, ref_channels, hidden, backend)
            self.ref_pose_encoder = PixelEncoder(ref_channels, hidden, backend) if reference_pose else None
        else:
            self.ref_latent_encoder = None
            self.ref_pose_encoder = None
        # CLIP text tower output for "" (SPEC §2); set from the frozen text encoder, not trained, not saved.
        self.register_buffer("empty_text", torch.zeros(EMPTY_TEXT_TOKENS, context_dim), persistent=False)

    @torch.no_grad()
    def set_empty_text(self, tokens: Tensor) -> None:
        """tokens: (n d) or (1 n d), the empty-string text embedding."""
        if tokens.ndim == 3:
            if tokens.shape[0] != 1:
                raise ValueError(f"expected (1, n, d) empty-text tokens, got {tuple(tokens.shape)}")
            tokens = tokens[0]
        if tokens.ndim != 2 or tokens.shape[1] != self.context_dim:
            raise ValueError(f"expected (n, {self.context_dim}) empty-text tokens, got {tuple(tokens.shape)}")
        self.empty_text = (
            tokens.detach().to(device=self.empty_text.device, dtype=self.empty_text.dtype).clone()
        )

    @property
    def conditions(self) -> frozenset[str]:
        """The conditions this denoiser uses (names of ``Conditions`` fields): what
        ``build_conditions`` computes for it, and what condition dropout may drop."""
        used = {"pose"}
        if self.clip_proj is not None:
            used.add("clip_embed")
        if self.local_image_encoder is not None:
            used.add("local_image")
        if self.ref_latent_encoder is not None:
            used.add("ref_latent")
            if self.ref_pose_encoder is not None:
                used.add("ref_pose")
        return frozenset(used)

    def context(self, cond: Conditions, batch: int) -> Tensor:
        """Empty-text tokens ++ CLIP tokens (zeros when absent or dropped): b n d."""
        text = self.empty_text.unsqueeze(0).expand(batch, -1, -1)
        if cond.clip_embed is not None:
            if self.clip_proj is None:
                raise ValueError("cond.clip_embed given but the model was built with clip_tokens=False")
            tokens = _zero_dropped(self.clip_proj(cond.clip_embed), cond.drop.get("clip"))
        else:
            tokens = text.new_zeros(batch, self.num_clip_tokens, self.context_dim)
        return torch.cat([text.to(tokens.dtype), tokens], dim=1)

    def reference(self, cond: Conditions, x: Tensor) -> Tensor | None:
        """Reference guidance b c_in 1 h w (zeros when absent), or None without reference guidance.

        x: the noisy latent b 4 f h w (for batch size, size, dtype and device).
        """
        if self.ref_latent_encoder is None:
            if cond.ref_latent is not None:
                raise ValueError(
                    "cond.ref_latent given but the model was built with reference_guidance=False"
                )
            return None
        b, _, _, h, w = x.shape
        if cond.ref_latent is None:
            return x.new_zeros(b, self.unet.in_channels, 1, h, w)
        ref = self.ref_latent_encoder(cond.ref_latent[:, :, None])
        if self.ref_pose_encoder is not None:
            if cond.ref_pose is None:
                raise ValueError("cond.ref_latent needs cond.ref_pose (the reference image's own skeleton)")
            ref = ref + self.ref_pose_encoder(cond.ref_pose[:, :, None], (h, w))
        return _zero_dropped(ref, cond.drop.get("reference"))

    def concat_features(self, cond: Conditions, x: Tensor) -> Tensor:
        """Pose features + local-image features (zeros when absent): b pose_channels f h w."""
        b, _, f, h, w = x.shape
        concat = x.new_zeros(b, self.pose_channels, f, h, w)
        if cond.local_image is not None:
            if self.local_image_encoder is None:
                raise ValueError(
                    "cond.local_image given but the model was built with local_image_stream=False"
                )
            # The release feeds the first frame repeated over the f frames: run the convs once and
            # the frame transformer on the f copies.
            feats = self.local_image_encoder.encode_frames(cond.local_image[:, :, None], (h, w))
            feats = self.local_image_encoder.frame_transformer(repeat(feats, "b c 1 h w -> b c f h w", f=f))
            concat = concat + _zero_dropped(feats, cond.drop.get("local_image"))
        if cond.pose is not None:
            concat = concat + _zero_dropped(self.pose_encoder(cond.pose, (h, w)), cond.drop.get("pose"))
        return concat

    def denoise(
        self, x: Tensor, t: Tensor, concat: Tensor, reference: Tensor | None, context: Tensor
    ) -> Tensor:
        """Unified input -> UNet -> drop frame 0.

        x: b 4 f h w, t: b, concat: b pose_channels f h w, reference: b c_in 1 h w or None,
        context: b n d -> b 4 f h w.
        """
        unet_in = torch.cat([x, concat.to(x.dtype)], dim=1)
        if reference is None:
            return self.unet(unet_in, t, context)
        unet_in = torch.cat([reference.to(x.dtype), unet_in], dim=2)
        return self.unet(unet_in, t, context)[:, :, 1:]

    def forward(self, x: Tensor, t: Tensor, cond: Conditions) -> Tensor:
        """x: b 4 f h w noisy latent, t: b int timesteps -> v-prediction b 4 f h w.

        The UNet runs on f + 1 frames (reference guidance as frame 0) and frame 0 is dropped.
        """
        context = self.context(cond, x.shape[0])
        return self.denoise(x, t, self.concat_features(cond, x), self.reference(cond, x), context)
