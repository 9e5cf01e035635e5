"""Latents → 8-bit pictures: VAE decode (tiled when large or out of memory) and A1111's conversion to pixels."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..models.vae import decode_latents

# Above this many latent pixels the VAE decodes in tiles (diffusers' tiled decode): big images fit in memory.
TILED_DECODE_ABOVE = 128 * 128


def _decode(vae, latent: torch.Tensor) -> torch.Tensor:
    tiled = latent.shape[-1] * latent.shape[-2] > TILED_DECODE_ABOVE
    (vae.enable_tiling if tiled else vae.disable_tiling)()
    try:
        return decode_latents(vae, latent)
    except torch.OutOfMemoryError:
        if tiled:
            raise
        torch.cuda.empty_cache()
        vae.enable_tiling()  # out of memory in one piece: tiles, as ComfyUI falls back
        return decode_latents(vae, latent)


def to_pixels(decoded: torch.Tensor) -> np.ndarray:
    """A decoded (3, H, W) image in [-1, 1] → (H, W, 3) uint8 exactly as A1111 and ComfyUI make it: clamp
    (x + 1) / 2 to [0, 1] in float32, times 255, then *truncate*. Rounding instead would leave about half the
    pixels of every picture one level above A1111's."""
    unit = torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)
    return (255.0 * np.moveaxis(unit.cpu().numpy(), 0, 2)).astype(np.uint8)


def latents_to_images(vae, latents: torch.Tensor) -> list[Image.Image]:
    scale = vae.config.scaling_factor
    out = []
    for latent in latents:  # one at a time: VAE decode memory grows fast with batch
        decoded = _decode(vae, latent[None] / scale)
        out.append(Image.fromarray(to_pixels(decoded[0])))
    return out
