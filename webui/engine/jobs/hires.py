"""Hires fix: A1111's txt2img second pass. The first pass's latents are upscaled (in latent space, or decoded,
upscaled as pictures and encoded again), then sampled again as img2img with fresh noise from the same per-image
seeds at the new size, for exactly "Hires steps" (or the steps) over a schedule of int(steps / denoise)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..imaging import upscalers
from ..imaging.upscalers import UnknownUpscaler
from ..models import token_merging
from ..params import SIZE_MAX, SIZE_MIN, GenerationParams
from ..samplers import sampling
from ..samplers.sampling import img2img_steps
from ..settings import Settings
from .start import FromImage

# A1111's shared.latent_upscale_modes: name → (torch interpolation mode, antialias)
LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
DEFAULT_UPSCALER = "Latent"  # A1111's latent_upscale_default_mode, used when hr_upscaler is not given
DEFAULT_DENOISE = 0.7  # A1111's hires slider default (params.py declares denoising_strength's img2img default)
HIRES_SIZE_MAX = 2 * SIZE_MAX  # the second pass may go past the first pass's bound (2048 → 4096)


def upscaler_names(models=None) -> list[str]:
    """`models`: the user's upscaler model files (imaging/upscaler_models.py), listed after the built-in ones."""
    return [*LATENT_MODES, *upscalers.names(models)]


def check_upscaler(name: str | None, models=None) -> str:
    name = name or DEFAULT_UPSCALER
    if name not in LATENT_MODES and name not in upscalers.names(models):
        raise UnknownUpscaler(f"could not find upscaler named {name!r}; choose one of: "
                              f"{', '.join(upscaler_names(models))}")
    return name


@dataclass(frozen=True)
class Target:
    """Where the second pass samples: the upscaled size, and the latent rows/columns cut from each side when
    "Resize width/height to" has another aspect than the first pass (A1111 scales to cover, then crops)."""
    width: int
    height: int
    truncate_x: int = 0
    truncate_y: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """The pictures' final size."""
        return (self.width - 8 * self.truncate_x) // 8 * 8, (self.height - 8 * self.truncate_y) // 8 * 8


def target(params: GenerationParams) -> Target:
    """A1111's calculate_target_resolution."""
    w, h, rx, ry = params.width, params.height, params.hr_resize_x, params.hr_resize_y
    if rx == 0 and ry == 0:
        return Target(int(w * params.hr_scale), int(h * params.hr_scale))
    if ry == 0:
        return Target(rx, rx * h // w)
    if rx == 0:
        return Target(ry * w // h, ry)
    if w / h < rx / ry:
        x, y = rx, rx * h // w
    else:
        x, y = ry * w // h, ry
    return Target(x, y, (x - rx) // 8, (y - ry) // 8)


def upscale_latents(latents: torch.Tensor, upscaler: str, to: Target, encode, decode, models=None) -> torch.Tensor:
    """The first pass's latents at the second pass's size: interpolated, or through pictures (decode → resize
    → encode, one image at a time), then cropped when the target aspect differs."""
    h, w = to.height // 8, to.width // 8
    if upscaler in LATENT_MODES:
        mode, antialias = LATENT_MODES[upscaler]
        out = torch.nn.functional.interpolate(latents.float(), size=(h, w), mode=mode, antialias=antialias)
    else:
        pictures = [upscalers.resize_to(image, upscaler, to.width, to.height, models) for image in decode(latents)]
        out = torch.cat([encode(picture) for picture in pictures]).to(latents.device)
        if out.shape[-2:] != (h, w):
            out = out[..., :h, :w]
    if to.truncate_x or to.truncate_y:
        ty, tx = to.truncate_y, to.truncate_x
        out = out[:, :, ty // 2:out.shape[2] - (ty + 1) // 2, tx // 2:out.shape[3] - (tx + 1) // 2]
    return out.to(latents.dtype)


@dataclass(frozen=True)
class HiresModel:
    """A1111's Hires checkpoint when it is another model than the job's: what the second pass samples on."""
    components: object
    denoiser: object
    encoder: object
    title: str  # A1111's short title for the infotext: "name [hash]"


def _check_other(components, other: HiresModel):
    mine, theirs = components.arch, other.components.arch
    if mine.model_family.latent.channels != theirs.model_family.latent.channels or \
            mine.model_family.latent.scale_factor != theirs.model_family.latent.scale_factor:
        raise UserError(f"hires checkpoint {other.title} is {theirs.model_family.label}, whose latents differ from "
                        f"the job's {mine.model_family.label} model: choose one of the same family")
    if mine.inpainting != theirs.inpainting:
        raise UserError(f"hires checkpoint {other.title}: an inpainting model and an ordinary one cannot share a "
                        "job; choose one of the same kind")


def second_pass_request(params: GenerationParams) -> GenerationParams:
    """The request the second pass samples with: its sampler, schedule, steps and prompts."""
    return params.replace(sampler_name=params.hr_sampler_name or params.sampler_name,
                          scheduler=params.hr_scheduler or params.scheduler,
                          steps=params.hr_second_pass_steps or params.steps,
                          prompt=params.hr_prompt or params.prompt,
                          negative_prompt=params.hr_negative_prompt or params.negative_prompt)


def _schedule_written(first: sampling.Plan, second: sampling.Plan, request: GenerationParams) -> str | None:
    """A1111's "Hires schedule type": in the second pass, a schedule with a function of its own (not the
    model's) whose label differs from the one the first pass recorded."""
    if second.sampler.is_timestep_based:
        return None
    label = second.sampler.default_schedule if request.scheduler == "Automatic" else request.scheduler
    recorded = first.record.get("scheduler")
    first_label = None if first.sampler.is_timestep_based or recorded == "Automatic" else recorded
    return label if label is not None and label != first_label else None


@dataclass
class SecondPass:
    """Everything fixed before the first image: the upscale, the second pass's plan, start and conditioning."""
    components: object
    params: GenerationParams
    plan: sampling.Plan
    upscaler: str
    to: Target
    t_enc: int
    schedule_steps: int
    conditioning: object
    record: dict  # the hires fields as they took effect, for the infotext
    models: object = None  # the user's upscaler model files
    first_vae: object = None  # the first pass's VAE, which decodes its latents for a pixel upscaler

    @property
    def sampling_steps(self) -> int:
        return self.plan.sampler.sampling_steps(self.schedule_steps, self.t_enc)

    @property
    def model_calls(self) -> int:
        return self.sampling_steps * self.plan.model_calls_per_step

    @classmethod
    def prepare(cls, components, denoiser, params: GenerationParams, settings: Settings, first: sampling.Plan,
                encoder, conditioning, models=None, other=None) -> SecondPass:
        """Raises UserError for an unknown upscaler, a hires checkpoint that cannot take these latents or a size
        out of bounds: before the first pass, so a mistake costs nothing. `other`: the hires checkpoint, when it
        is not the job's (HiresModel): the second pass samples on it, with its own text encoder and VAE."""
        from ..prompts.conditioning import build_conditioning

        first_vae = components.vae
        if other is not None:
            _check_other(components, other)
            components, denoiser, encoder = other.components, other.denoiser, other.encoder
        upscaler = check_upscaler(params.hr_upscaler, models)
        to = target(params)
        width, height = to.size
        if not (SIZE_MIN <= width <= HIRES_SIZE_MAX and SIZE_MIN <= height <= HIRES_SIZE_MAX):
            raise UserError(f"hires fix would make {width}x{height} pictures; each side must be between {SIZE_MIN} "
                            f"and {HIRES_SIZE_MAX}")
        request = second_pass_request(params)
        strength = DEFAULT_DENOISE if params.denoising_strength is None else params.denoising_strength
        schedule_steps, t_enc = img2img_steps(request.steps, strength, fix_steps=True)
        family = components.arch.model_family
        plan_ = sampling.make_plan(request, settings, denoiser, schedule_steps, family)
        if other is not None or (request.prompt, request.negative_prompt, request.steps) != (
                params.prompt, params.negative_prompt, params.steps):
            conditioning, _ = build_conditioning(encoder, request.prompt, request.negative_prompt, request.steps,
                                                 params.clip_skip, params.emphasis, family.zero_empty_negative)
        first_sampler = first.sampler.name
        record = dict(
            enable_hr=True, denoising_strength=strength, hr_upscaler=upscaler,
            hr_second_pass_steps=params.hr_second_pass_steps,
            hr_checkpoint_name=other.title if other is not None else None,
            hr_sampler_name=plan_.sampler.name if plan_.sampler.name != first_sampler else None,
            hr_scheduler=_schedule_written(first, plan_, request),
            hr_prompt=request.prompt if request.prompt != params.prompt else "",
            hr_negative_prompt=request.negative_prompt if request.negative_prompt != params.negative_prompt else "")
        return cls(components, params, plan_, upscaler, to, t_enc, schedule_steps, conditioning, record, models,
                   first_vae)

    def run(self, latents: torch.Tensor, seeds: list[int], subseeds: list[int], device, on_model_call,
            callback_for, concat_for, patches=None, before_sampling=None) -> torch.Tensor:
        """The batch's first-pass latents → its second-pass latents. `callback_for(steps)`: the sampler
        callback (NaN check, progress report); `concat_for(width, height, n)`: an inpainting model's
        txt2img conditioning at the new size, else None. `patches`: the job's denoiser-side patches;
        `before_sampling("hires", start latent, conditioning)`: the Script API's hook."""
        from ..rng import ImageRNG
        from ..samplers.denoiser import CFGDenoiser
        from . import decode, img2img

        vae = self.components.vae
        first_vae = self.first_vae or vae
        up = upscale_latents(latents, self.upscaler, self.to, lambda picture: img2img.encode_picture(vae, picture),
                             lambda batch: decode.latents_to_images(first_vae, batch), self.models)
        p = self.params
        rng = ImageRNG(tuple(up.shape[1:]), seeds, subseeds, p.subseed_strength,
                       (p.seed_resize_from_w, p.seed_resize_from_h), self.plan.ensd, self.plan.rng_source)
        start = FromImage(up, self.t_enc, self.schedule_steps)
        begin, keep = start.begin(self.plan, rng, seeds, device)
        height, width = up.shape[-2] * 8, up.shape[-1] * 8
        family = self.components.arch.model_family
        model = CFGDenoiser(self.plan.denoiser, self.conditioning, p.cfg_scale, on_step=on_model_call,
                            time_ids=family.time_ids(height, width), concat=concat_for(width, height, len(seeds)),
                            patches=patches, total_steps=self.sampling_steps)
        if before_sampling is not None:
            before_sampling("hires", begin.x, self.conditioning)
        callback = callback_for(self.sampling_steps)
        with token_merging.merged(self.components.unet, p.token_merging_ratio_hr):
            out = sampling.run(self.plan, model, begin, rng, seeds, device, callback=callback)
        if not bool(torch.isfinite(out).all()) and callback is not None:
            callback({"i": self.sampling_steps - 1, "denoised": out})  # the last step's NaN check
        return out
