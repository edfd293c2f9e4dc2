"""YUV 4:2:0 -> RGB for decoded video frames, in torch so it runs on the device.

The training loader ships the decoder's YUV planes (1.5 bytes a pixel instead of 3, and no
per-frame colour conversion on the workers' CPUs); :meth:`VideoPoseDataModule.to_float` converts
them after the host-to-device copy. FFmpeg's swscale, which :func:`datamodules.format.decode_mp4`
uses, has no device version, so this is written by hand: it does swscale's x86 arithmetic (the
16-bit fixed point of ``libswscale/x86/yuv_2_rgb.asm`` with the coefficients of
``ff_yuv2rgb_c_init_tables``, chroma repeated over its 2 x 2 block), and so gives the same
pixels as ``decode_mp4`` on x86 machines, bit for bit (``tests/test_colour.py``); swscale's
ARM code rounds differently, by a level here and there.

Packed layout (``pack_yuv420``): per frame, the H x W luma, then Cb and Cr (H/2 x W/2 each),
flattened and viewed as (3H/2, W) rows, FFmpeg's own layout for yuv420p arrays.
"""

from __future__ import annotations

import numpy as np
import torch

# swscale's inverse tables (16.16 fixed point: Cr->R, Cb->B, Cb->G, Cr->G), ff_yuv2rgb_coeffs.
_INVERSE = {"bt601": (104597, 132201, 25675, 53279), "bt709": (117489, 138438, 13975, 34925)}
# Colour code (datamodules.format.colour_code) -> (matrix, full range).
COLOUR_CODES = {0: ("bt601", False), 1: ("bt709", False), 2: ("bt601", True), 3: ("bt709", True)}


def _round16(value: int) -> int:
    return (value + (1 << 15)) >> 16


def _fixed_point(code: int) -> list[int]:
    """[y offset << 3, y, Cr->R, Cb->G, Cr->G, Cb->B] as swscale's 16-bit multipliers."""
    matrix, full = COLOUR_CODES[code]
    crv, cbu, cgu, cgv = _INVERSE[matrix]
    cgu, cgv, cy, oy = -cgu, -cgv, 1 << 16, 0
    if full:
        crv, cbu, cgu, cgv = (int(v * 224 / 255) for v in (crv, cbu, cgu, cgv))  # C: int64 (v * 224) / 255
    else:
        cy, oy = (cy * 255) // 219, 16 << 16
    return [_round16(oy * 8), *(_round16(v * 8192) for v in (cy, crv, cgu, cgv, cbu))]


_FIXED_POINT = torch.tensor([_fixed_point(code) for code in sorted(COLOUR_CODES)], dtype=torch.int32)


def pack_yuv420(y: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``y`` (..., H, W) and ``uv`` (..., 2, H/2, W/2) uint8 -> packed (..., 3H/2, W); H, W even."""
    height, width = y.shape[-2:]
    if height % 2 or width % 2 or uv.shape[-3:] != (2, height // 2, width // 2):
        raise ValueError(f"packed 4:2:0 needs even sizes and half-size chroma, got {y.shape} and {uv.shape}")
    lead = y.shape[:-2]
    out = np.empty((*lead, height * width * 3 // 2), np.uint8)
    out[..., : height * width] = y.reshape(*lead, -1)
    out[..., height * width :] = uv.reshape(*lead, -1)
    return out.reshape(*lead, height * 3 // 2, width)


def yuv420_to_rgb(packed: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Packed uint8 4:2:0 (b, ..., 3H/2, W) and colour codes (b,) -> uint8 RGB (b, 3, ..., H, W)."""
    rows, width = packed.shape[-2:]
    height = rows * 2 // 3
    if rows * 2 % 3 or height % 2 or width % 2:
        raise ValueError(f"not a packed 4:2:0 picture: {rows} rows of {width}")
    flat = packed.flatten(-2)
    y = flat[..., : height * width].unflatten(-1, (height, width)).int()
    uv = flat[..., height * width :].unflatten(-1, (2, height // 2, width // 2)).int()
    # (v << 3) - (128 << 3), then the 2 x 2 repeat (cheaper on the quarter-size planes first)
    uv = (uv * 8 - 1024).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    cb, cr = uv.unbind(-3)
    k = _FIXED_POINT.to(packed.device)[colour.long()]
    k = k.view(k.shape[0], 6, *([1] * (y.dim() - 1))).unbind(1)

    def mulhi(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # pmulhw: (a * b) >> 16, floored
        return torch.bitwise_right_shift(a * b, 16)

    luma = mulhi(y * 8 - k[0], k[1])
    red = luma + mulhi(cr, k[2])
    green = luma + mulhi(cb, k[3]) + mulhi(cr, k[4])
    blue = luma + mulhi(cb, k[5])
    return torch.stack([red, green, blue], dim=1).clamp_(0, 255).to(torch.uint8)
