"""img2img and inpainting: an init image (and mask) → the FromImage start a job runs from, as A1111's
StableDiffusionProcessingImg2Img.init. The pixel work is in imaging/ops.py and imaging/masks.py; this module ties
it to the VAE and the sampler schedule."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..fields import declared_field
from ..imaging import masks
from ..imaging.ops import LATENT_UPSCALE, check_size, normalize_image, resize_image
from ..params import GenerationParams
from ..samplers.sampling import img2img_steps
from ..settings import Settings
from .resolve import resolve
from .start import FromImage

# Bigger init images are refused with a message (A1111 has no bound and runs out of memory instead).
MAX_INIT_PIXELS = 4096 * 4096


def _ui_default(name: str):
    """A1111's UI value for an img2img field the request leaves at None (declared once, in params.py)."""
    return declared_field(GenerationParams, name).spec.ui_default


DEFAULT_STRENGTH = _ui_default("denoising_strength")  # 0.75
DEFAULT_MASK_BLUR = _ui_default("mask_blur")  # 4
DEFAULT_FILL = _ui_default("inpainting_fill")  # 1: original
DEFAULT_PADDING = _ui_default("inpaint_full_res_padding")  # 32


@dataclass
class Prepared:
    init: FromImage
    warnings: list[str] = field(default_factory=list)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL → (1, 3, H, W) in [-1, 1]."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def _encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The VAE's mean latent, scaled (A1111 samples the posterior with the global RNG; the mean is what
    makes the same request give the same image), float32 on the CPU."""
    param = next(vae.parameters())
    device = param.device if param.device.type != "meta" else torch.device("cpu")
    latent = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean
    return (latent.float() * vae.config.scaling_factor).cpu()


def encode_picture(vae, image: Image.Image) -> torch.Tensor:
    """A picture's latent (1, C, h, w) as the UNet sees it (scaled, the VAE's mean): hires fix's pixel path."""
    return _encode(vae, _to_tensor(image))


def _binary(mask: Image.Image) -> torch.Tensor:
    """(1, 1, H, W) float mask rounded to 0/1, as A1111's inpainting conditioning (mask_round)."""
    return torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0).round()[None, None]


def _inpainting_concat(vae, image: Image.Image, mask: Image.Image | None, weight: float,
                       latent_hw: tuple[int, int]) -> torch.Tensor:
    """A 9-channel model's extra input: the mask and the latent of the image with the masked part blanked
    (lerped by "Conditional mask weight"); no mask = everything masked."""
    source = _to_tensor(image)
    cond_mask = _binary(mask) if mask is not None else torch.ones(1, 1, *source.shape[-2:])
    masked = torch.lerp(source, source * (1.0 - cond_mask), weight)
    latent = _encode(vae, masked)
    cond_mask = torch.nn.functional.interpolate(cond_mask, size=latent_hw)
    return torch.cat([cond_mask, latent], dim=1)


@dataclass
class _Masked:
    """The mask side of a request, as it took effect: the mask for processing (cropped/resized like the image),
    the one for compositing, the crop region of "Only masked", the original to composite onto."""
    proc_mask: Image.Image | None = None
    overlay_mask: Image.Image | None = None
    region: tuple[int, int, int, int] | None = None
    original: Image.Image | None = None


def _prepare_mask(params: GenerationParams, image: Image.Image, mask: Image.Image, fill: int, record: dict,
                  warnings: list[str]) -> _Masked:
    width, height = params.width, params.height
    check_size(*mask.size, MAX_INIT_PIXELS)
    blur = DEFAULT_MASK_BLUR if params.mask_blur is None else params.mask_blur
    full = masks.prepare_mask(mask, image.size, blur, blur, params.inpainting_mask_invert)
    if masks.is_empty(full) and not params.inpaint_full_res:
        warnings.append("the mask is empty: nothing is inpainted, the image comes back unchanged")
    record.update(mask_blur=blur or None, inpainting_mask_invert=params.inpainting_mask_invert,
                  inpainting_fill=fill)
    if not params.inpaint_full_res:
        mode = 0 if params.resize_mode == LATENT_UPSCALE else params.resize_mode
        resized = resize_image(mode, full, width, height)
        return _Masked(resized, resized, None, resize_image(mode, image, width, height))
    padding = DEFAULT_PADDING if params.inpaint_full_res_padding is None else params.inpaint_full_res_padding
    region = masks.get_crop_region(full, padding)
    if region is None:
        warnings.append('Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.')
        record.update(mask_blur=None, inpainting_mask_invert=False, inpainting_fill=None)
        return _Masked()
    region = masks.expand_crop_region(region, width, height, *full.size)
    record.update(inpaint_full_res=True, inpaint_full_res_padding=padding)
    return _Masked(masks.crop_to_region(full, region, width, height), full, region, image)


def _processed_image(params: GenerationParams, image: Image.Image, masked: _Masked, fill: int) -> Image.Image:
    """The picture that gets encoded: cropped to the region, resized, or (latent upscale) as it is."""
    if masked.region is not None:
        proc = masks.crop_to_region(image, masked.region, params.width, params.height)
    elif params.resize_mode == LATENT_UPSCALE:
        proc = image  # encoded at its own size, the latent is stretched (A1111's latent upscale)
    else:
        proc = resize_image(params.resize_mode, image, params.width, params.height)
    if masked.proc_mask is not None and fill == 0:
        mask = masked.proc_mask
        proc = masks.fill(proc, mask if mask.size == proc.size else mask.resize(proc.size))
    return proc


def prepare(components, params: GenerationParams, settings: Settings, init_image: Image.Image,
            mask: Image.Image | None = None) -> Prepared:
    """Everything A1111's img2img init does before sampling. `params` is the validated request, resolved
    against `settings` (the job's snapshot) here if it is not yet."""
    params = resolve(params, settings, img2img=True)
    width, height = params.width, params.height
    strength = DEFAULT_STRENGTH if params.denoising_strength is None else params.denoising_strength
    warnings: list[str] = []
    image = normalize_image(init_image, MAX_INIT_PIXELS, settings.img2img_background_color)
    record: dict = dict(denoising_strength=strength, mask_blur=None, inpainting_mask_invert=False,
                        inpainting_fill=None, inpaint_full_res=False, inpaint_full_res_padding=None,
                        inpainting_mask_weight=None, initial_noise_multiplier=params.initial_noise_multiplier)
    fill = DEFAULT_FILL if params.inpainting_fill is None else params.inpainting_fill
    masked = _prepare_mask(params, image, mask, fill, record, warnings) if mask is not None else _Masked()
    proc = _processed_image(params, image, masked, fill)

    vae = components.vae
    latent = _encode(vae, _to_tensor(proc))
    latent_hw = (height // 8, width // 8)
    if latent.shape[-2:] != latent_hw:
        latent = torch.nn.functional.interpolate(latent, size=latent_hw, mode="bilinear")
    keep = None
    if masked.proc_mask is not None:
        regen = masks.latent_mask(masked.proc_mask, latent_hw[1], latent_hw[0])
        keep = torch.from_numpy(1.0 - regen)[None, None]
    concat = None
    if components.arch.inpainting:
        cond_image = proc if proc.size == (width, height) else resize_image(0, proc, width, height)
        concat = _inpainting_concat(vae, cond_image, masked.proc_mask, params.inpainting_mask_weight, latent_hw)
        record["inpainting_mask_weight"] = params.inpainting_mask_weight
    schedule_steps, t_enc = img2img_steps(params.steps, strength, settings.img2img_fix_steps)

    def finish(generated: Image.Image) -> Image.Image:
        if masked.overlay_mask is None:
            return generated
        return masks.composite(masked.original, generated, masked.overlay_mask, masked.region)

    init = FromImage(latent, t_enc, schedule_steps, keep=keep, latent_fill=fill if keep is not None else None,
                     concat=concat, noise_multiplier=params.initial_noise_multiplier, finish=finish, record=record)
    return Prepared(init, warnings)
