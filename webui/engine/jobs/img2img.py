"""img2img and inpainting: an init image (and mask) → the InitLatents a job starts from, as A1111's
StableDiffusionProcessingImg2Img.init. The pixel work is in img_ops.py and masks.py; this module ties it to the
VAE and the sampler schedule."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .imaging import masks
from .imaging.ops import LATENT_UPSCALE, check_size, normalize_image, resize_image
from .params import GenerationParams
from .processing import InitLatents
from .samplers.sampling import img2img_steps
from .settings import Settings

# Bigger init images are refused with a message (A1111 has no bound and runs out of memory instead).
MAX_INIT_PIXELS = 4096 * 4096
DEFAULT_STRENGTH = 0.75
DEFAULT_MASK_BLUR = 4
DEFAULT_FILL = 1  # original
DEFAULT_PADDING = 32


@dataclass
class Prepared:
    init: InitLatents
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


def prepare(components, params: GenerationParams, settings: Settings, init_image: Image.Image,
            mask: Image.Image | None = None) -> Prepared:
    """Everything A1111's img2img init does before sampling. `params` is the validated request."""
    width, height = params.width, params.height
    strength = DEFAULT_STRENGTH if params.denoising_strength is None else params.denoising_strength
    warnings: list[str] = []
    image = normalize_image(init_image, MAX_INIT_PIXELS, settings.img2img_background_color)
    record: dict = dict(denoising_strength=strength, mask_blur=None, inpainting_mask_invert=False,
                        inpainting_fill=None, inpaint_full_res=False, inpaint_full_res_padding=None,
                        inpainting_mask_weight=None)
    region = proc_mask = overlay_mask = original = None
    fill = DEFAULT_FILL if params.inpainting_fill is None else params.inpainting_fill
    if mask is not None:
        check_size(*mask.size, MAX_INIT_PIXELS)
        blur = DEFAULT_MASK_BLUR if params.mask_blur is None else params.mask_blur
        full = masks.prepare_mask(mask, image.size, blur, blur, params.inpainting_mask_invert)
        if masks.is_empty(full) and not params.inpaint_full_res:
            warnings.append("the mask is empty: nothing is inpainted, the image comes back unchanged")
        record.update(mask_blur=blur or None, inpainting_mask_invert=params.inpainting_mask_invert,
                      inpainting_fill=fill)
        if params.inpaint_full_res:
            padding = DEFAULT_PADDING if params.inpaint_full_res_padding is None else params.inpaint_full_res_padding
            region = masks.get_crop_region(full, padding)
            if region is None:
                warnings.append('Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img '
                                'mode.')
                record.update(mask_blur=None, inpainting_mask_invert=False, inpainting_fill=None)
            else:
                region = masks.expand_crop_region(region, width, height, *full.size)
                proc_mask, overlay_mask, original = masks.crop_to_region(full, region, width, height), full, image
                record.update(inpaint_full_res=True, inpaint_full_res_padding=padding)
        else:
            mode = 0 if params.resize_mode == LATENT_UPSCALE else params.resize_mode
            proc_mask = overlay_mask = resize_image(mode, full, width, height)
            original = resize_image(mode, image, width, height)

    if region is not None:
        proc = masks.crop_to_region(image, region, width, height)
    elif params.resize_mode == LATENT_UPSCALE:
        proc = image  # encoded at its own size, the latent is stretched (A1111's latent upscale)
    else:
        proc = resize_image(params.resize_mode, image, width, height)
    if proc_mask is not None and fill == 0:
        proc = masks.fill(proc, proc_mask if proc_mask.size == proc.size else proc_mask.resize(proc.size))

    vae = components.vae
    latent = _encode(vae, _to_tensor(proc))
    latent_hw = (height // 8, width // 8)
    if latent.shape[-2:] != latent_hw:
        latent = torch.nn.functional.interpolate(latent, size=latent_hw, mode="bilinear")

    keep = None
    if proc_mask is not None:
        regen = masks.latent_mask(proc_mask, latent_hw[1], latent_hw[0])
        keep = torch.from_numpy(1.0 - regen)[None, None]

    concat = None
    if components.arch.inpainting:
        weight = settings.inpainting_mask_weight if params.inpainting_mask_weight is None \
            else params.inpainting_mask_weight
        cond_image = proc if proc.size == (width, height) else resize_image(0, proc, width, height)
        concat = _inpainting_concat(vae, cond_image, proc_mask, weight, latent_hw)
        record["inpainting_mask_weight"] = weight

    schedule_steps, t_enc = img2img_steps(params.steps, strength, settings.img2img_fix_steps)
    multiplier = settings.initial_noise_multiplier if params.initial_noise_multiplier is None \
        else params.initial_noise_multiplier
    record["initial_noise_multiplier"] = multiplier

    def finish(generated: Image.Image) -> Image.Image:
        if overlay_mask is None:
            return generated
        return masks.composite(original, generated, overlay_mask, region)

    init = InitLatents(latent, t_enc, schedule_steps, keep=keep, latent_fill=fill if keep is not None else None,
                       concat=concat, noise_multiplier=multiplier, finish=finish, record=record)
    return Prepared(init, warnings)
