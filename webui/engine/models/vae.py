"""External VAE files (models/VAE/): find them, pick one as A1111 does, read one into an AutoencoderKL, and
decode safely (an fp16 VAE that overflows is re-run in fp32)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import CheckpointError, CheckpointInfo, non_finite_key, read_state_dict
from ..errors import UserError

VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
AUTOMATIC, NONE = "Automatic", "None"


class VAEError(UserError):
    pass


@dataclass(frozen=True)
class VAEInfo:
    path: Path
    name: str  # relative to the VAE folder, with suffix

    @property
    def model_name(self) -> str:
        """What infotext writes as `VAE:` (A1111: the file name)."""
        return Path(self.name).name


def list_vaes(vae_dir: Path) -> list[VAEInfo]:
    vae_dir = Path(vae_dir)
    if not vae_dir.is_dir():
        return []
    found = [VAEInfo(p.resolve(), p.relative_to(vae_dir).as_posix()) for p in vae_dir.rglob("*")
             if p.is_file() and p.suffix.lower() in VAE_SUFFIXES]
    return sorted(found, key=lambda v: v.name.lower())


def resolve_vae(choice: str, checkpoint: CheckpointInfo, vae_dir: Path) -> VAEInfo | None:
    """None = the checkpoint's own VAE. "Automatic": a `<ckpt>.vae.*` file beside the checkpoint, else a VAE in
    the folder with the checkpoint's name (A1111's order); otherwise the baked-in one."""
    if not choice or choice == NONE:
        return None
    if choice == AUTOMATIC:
        stem = checkpoint.path.with_suffix("")
        for suffix in VAE_SUFFIXES:
            beside = Path(f"{stem}.vae{suffix}")
            if beside.is_file():
                return VAEInfo(beside.resolve(), beside.name)
        for vae in list_vaes(vae_dir):
            if Path(vae.name).stem in (stem.name, f"{stem.name}.vae"):
                return vae
        return None
    path = Path(choice).expanduser()
    if path.is_file():
        return VAEInfo(path.resolve(), path.name)
    for vae in list_vaes(vae_dir):
        if choice in (vae.name, vae.model_name, Path(vae.name).stem):
            return vae
    known = ", ".join(v.name for v in list_vaes(vae_dir)) or f"none in {vae_dir}"
    raise VAEError(f"VAE not found: {choice!r} (choose Automatic, None or one of: {known})")


def load_vae(info: VAEInfo, like) -> torch.nn.Module:
    """A copy of the checkpoint's VAE module `like` holding the file's weights (LDM or diffusers key names)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        state_dict = read_state_dict(info.path)
    except CheckpointError as e:
        raise VAEError(str(e).replace("checkpoint", "VAE")) from e
    bad = non_finite_key(state_dict)  # refused before anything is built: the VAE in use stays
    if bad is not None:
        raise VAEError(f"VAE {info.name} is broken: {bad} contains NaN or infinite values")
    if any(k.startswith("encoder.down_blocks.") for k in state_dict):
        weights = state_dict  # already diffusers names
    else:
        weights = {k: v for k, v in convert_ldm_vae_checkpoint(state_dict, dict(like.config)).items()
                   if v is not None}
    expected = like.state_dict()
    wrong = [k for k, v in expected.items() if k not in weights or weights[k].shape != v.shape]
    if wrong:
        raise VAEError(f"{info.name} does not fit this checkpoint's VAE ({len(wrong)} tensors missing or of "
                       f"another shape, e.g. {wrong[0]})")
    vae = copy.deepcopy(like)
    vae.load_state_dict({k: weights[k] for k in expected})
    return vae


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1]. An fp16 decode that yields NaN/inf is redone in fp32 (A1111's auto VAE precision), and
    the VAE stays in fp32 afterwards, as A1111 converts it."""
    out = vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0]
    if vae.dtype != torch.float32 and not torch.isfinite(out).all():
        torch.nn.Module.to(vae, dtype=torch.float32)
        out = vae.decode(latents.to(vae.device, torch.float32), return_dict=False)[0]
    return out.float()
