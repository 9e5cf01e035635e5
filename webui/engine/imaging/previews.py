"""Live-preview decoders besides the family's cheap latent → RGB factors: TAESD (madebyollin's tiny decoder, the
user's `models/VAE-approx/taesd_decoder.pth` or `taesdxl_decoder.pth`, run as diffusers' DecoderTiny) and the
full VAE. A1111's "Live preview method": Approx cheap, TAESD, Full.

The original TAESD files are an nn.Sequential whose index 0 is the tanh clamp; diffusers' DecoderTiny does the
clamp in forward, so every layer index moves down by one and the rest of each key is the same."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import torch

from ..errors import UserError

PREVIEW_METHODS = ("Approx cheap", "TAESD", "Full")
SUFFIXES = (".pth", ".safetensors")
_cache: dict = {}
_lock = threading.Lock()


def find(folder: Path, name: str) -> Path | None:
    for suffix in SUFFIXES:
        path = Path(folder) / f"{name}_decoder{suffix}"
        if path.is_file():
            return path
    return None


def _decoder():
    from diffusers.models.autoencoders.vae import DecoderTiny

    return DecoderTiny(in_channels=4, out_channels=3, num_blocks=(3, 3, 3, 1), block_out_channels=(64, 64, 64, 64),
                       upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")


def _read(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load(path: Path):
    """The TAESD decoder in `path` (cached by path and modification time); UserError for a file that is not one."""
    path = Path(path)
    key = (path, path.stat().st_mtime_ns)
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            state = _read(path)
            renamed = {}
            for name, tensor in state.items():
                m = re.match(r"^(\d+)\.(.+)$", name)
                if m is None or int(m.group(1)) == 0:
                    raise KeyError(name)
                renamed[f"layers.{int(m.group(1)) - 1}.{m.group(2)}"] = tensor
            decoder = _decoder()
            decoder.load_state_dict(renamed, strict=True)
        except Exception as e:  # any unreadable or foreign file: one message, the job goes on with cheap previews
            raise UserError(f"{path.name} is not a TAESD decoder ({type(e).__name__}: {str(e)[:200]})") from e
        decoder.eval().requires_grad_(False)
        _cache.clear()
        _cache[key] = decoder
        return decoder


@torch.no_grad()
def taesd_preview(decoder, latent: torch.Tensor) -> torch.Tensor:
    """(4, h, w) latent as the UNet sees it (scaled) → (3, 8h, 8w) RGB in [-1, 1]."""
    return decoder(latent[None].float().cpu())[0].clamp(-1, 1)


@torch.no_grad()
def full_preview(vae, latent: torch.Tensor) -> torch.Tensor:
    """The real VAE decode of a (C, h, w) latent → (3, 8h, 8w) in [-1, 1]: exact, and as slow as a decode."""
    from ..jobs.decode import _decode

    return _decode(vae, latent[None] / vae.config.scaling_factor)[0].float().clamp(-1, 1).cpu()
