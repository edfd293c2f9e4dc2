"""The frozen pretrained encoders of SPEC §2: CLIP ViT-H/14 (image and empty text) and the SD 2.1 VAE.

Weights always come from local folders in the libraries' own formats (``save_pretrained``
layouts): a ``transformers`` CLIP folder (``CLIPModel``, e.g. laion/CLIP-ViT-H-14-laion2B-s32B-b79K)
and a ``diffusers`` ``AutoencoderKL`` folder (e.g. the ``vae`` folder of stable-diffusion-2-1).
Nothing is downloaded. The module is frozen here, in one visible place; the LightningModule
keeps it in eval mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from einops import rearrange
from torch import Tensor, nn
from transformers import CLIPModel

from unianimate import demo_cache
from unianimate.errors import InputError, MissingInputError

# CLIP's image normalisation (OpenAI / open_clip constants, the ones ViT-H/14 was trained with).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_LENGTH = 77


def _require_folder(path: str, what: str, expected: str, is_expected: Callable[[dict], bool]) -> Path:
    """The folder, or one line naming it: missing, or a save_pretrained folder of something else."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise MissingInputError(
            f"{what}: no {expected} at '{folder}' (expected a save_pretrained folder with config.json)"
        )
    try:
        config = json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{what}: '{folder / 'config.json'}' is not valid JSON ({error})") from error
    if not is_expected(config):
        found = config.get("_class_name") or config.get("architectures") or config.get("model_type") or "?"
        raise InputError(f"{what}: '{folder}' holds a {found} model; expected a {expected}")
    return folder


def _is_clip(config: dict) -> bool:
    return config.get("model_type") == "clip" or "CLIPModel" in (config.get("architectures") or [])


def _is_vae(config: dict) -> bool:
    return config.get("_class_name") == "AutoencoderKL"


def make_tiny_clip(path: str | Path, projection_dim: int = 32, seed: int = 0, text_width: int = 32) -> Path:
    """Write a tiny random-weight ``CLIPModel`` folder (the demo's and the tests' stand-in for ViT-H/14)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=text_width,  # the empty-text tokens' width: the denoiser's context_dim
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TEXT_LENGTH,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(path)
    return Path(path)


def make_tiny_vae(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``AutoencoderKL`` folder with the SD layout: 4 latent channels, /8."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    vae.save_pretrained(path)
    return Path(path)


class FrozenEncoders(nn.Module):
    """CLIP image embedding, the empty-text context and the VAE, all frozen.

    Args:
        clip_path: a ``CLIPModel`` folder (vision tower with projection + text tower).
        vae_path: an ``AutoencoderKL`` folder.
        vae_chunk: frames per VAE call when encoding or decoding videos (bounds memory).
        scaling_factor: latent scale; ``None`` (default) takes the VAE config's ``scaling_factor``
            (SD 2.1: 0.18215; the demo autoencoder: 1 / std of its latents).
        make_tiny_if_missing: create tiny random-weight folders at the paths when they are
            absent (the demo's embedded default), only inside the demo cache
            (``.cache/unianimate``, unianimate/demo_cache.py): a missing path anywhere else is an
            error, never a silently created random model.
        sample_posterior: latents are posterior samples (SPEC §2); False takes the posterior
            mean, which is what the latent cache stores.
    """

    def __init__(
        self,
        clip_path: str,
        vae_path: str,
        vae_chunk: int = 8,
        scaling_factor: float | None = None,
        make_tiny_if_missing: bool = False,
        sample_posterior: bool = True,
    ) -> None:
        super().__init__()
        clip_path, vae_path = demo_cache.resolve(clip_path), demo_cache.resolve(vae_path)
        if make_tiny_if_missing:
            if not (Path(clip_path) / "config.json").is_file() and demo_cache.is_demo_path(clip_path):
                make_tiny_clip(clip_path)
            if not (Path(vae_path) / "config.json").is_file() and demo_cache.is_demo_path(vae_path):
                make_tiny_vae(vae_path)
        clip_folder = _require_folder(clip_path, "clip_path", "CLIP model (transformers CLIPModel)", _is_clip)
        vae_folder = _require_folder(vae_path, "vae_path", "VAE (diffusers AutoencoderKL)", _is_vae)
        clip = CLIPModel.from_pretrained(clip_folder)
        # Only the vision tower + projection is kept; the text tower is used once, below.
        self.vision_model, self.visual_projection = clip.vision_model, clip.visual_projection
        self.vae = AutoencoderKL.from_pretrained(vae_folder)
        self.vae_chunk = vae_chunk
        self.sample_posterior = sample_posterior
        self.scaling_factor = float(
            self.vae.config.scaling_factor if scaling_factor is None else scaling_factor
        )
        self.clip_size = clip.config.vision_config.image_size
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        # SPEC §2: the empty prompt's tokens, computed once; the text tower is not kept.
        self.register_buffer("empty_text", self._empty_text(clip), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def clip_dim(self) -> int:
        return self.visual_projection.out_features

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each side (8 for the SD VAE)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def context_dim(self) -> int:
        return self.empty_text.shape[-1]

    @staticmethod
    @torch.no_grad()
    def _empty_text(clip: CLIPModel) -> Tensor:
        """(77, d): the text tower on "" — penultimate layer, then the final LayerNorm (SPEC §2)."""
        text = clip.text_model.eval()
        config = clip.config.text_config
        # open_clip's tokenizer (the one the release used) gives [BOS, EOS] padded with id 0.
        ids = torch.zeros(1, TEXT_LENGTH, dtype=torch.long)
        ids[0, 0], ids[0, 1] = config.bos_token_id, config.eos_token_id
        out = text(input_ids=ids, output_hidden_states=True)
        tokens = text.final_layer_norm(out.hidden_states[-2])
        return tokens[0].float()

    def train(self, mode: bool = True) -> FrozenEncoders:
        # Frozen encoders never leave eval mode (no dropout, fixed norms).
        return super().train(False)

    @torch.no_grad()
    def encode_clip(self, images: Tensor) -> Tensor:
        """Images b 3 H W in [-1, 1] -> pooled projected CLIP embedding b d."""
        x = (images.float() + 1) / 2
        x = F.interpolate(x, size=(self.clip_size, self.clip_size), mode="bicubic", align_corners=False)
        x = (x.clamp(0, 1) - self.clip_mean) / self.clip_std
        pooled = self.vision_model(pixel_values=x.to(self.visual_projection.weight.dtype)).pooler_output
        return self.visual_projection(pooled).float()

    @torch.no_grad()
    def encode_images(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images b 3 H W in [-1, 1] -> latents b 4 h w (posterior sample x scale)."""
        chunks = []
        for chunk in images.split(self.vae_chunk):
            posterior = self.vae.encode(chunk.to(self.vae.dtype)).latent_dist
            latent = posterior.sample(generator) if self.sample_posterior else posterior.mode()
            chunks.append(latent * self.scaling_factor)
        return torch.cat(chunks).float()

    @torch.no_grad()
    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Video b 3 f H W in [-1, 1] -> latents b 4 f h w, frame by frame."""
        b = video.shape[0]
        latents = self.encode_images(rearrange(video, "b c f h w -> (b f) c h w"), generator)
        return rearrange(latents, "(b f) c h w -> b c f h w", b=b)

    @torch.no_grad()
    def decode_video(self, latents: Tensor) -> Tensor:
        """Latents b 4 f h w -> video b 3 f H W in [-1, 1], decoded in chunks of frames."""
        b = latents.shape[0]
        flat = rearrange(latents, "b c f h w -> (b f) c h w") / self.scaling_factor
        frames = [self.vae.decode(chunk.to(self.vae.dtype)).sample for chunk in flat.split(self.vae_chunk)]
        return rearrange(torch.cat(frames).float().clamp(-1, 1), "(b f) c h w -> b c f h w", b=b)
