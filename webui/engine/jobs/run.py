"""Generation jobs: noise per image seed (or an img2img init latent) → sampler over the CFG denoiser → VAE decode
→ PIL images."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .params import GenerationParams
from .prompts.conditioning import build_conditioning
from .prompts.encoder import PromptEncoder
from .rng import ImageRNG, job_seeds
from .samplers import sampling
from .samplers.denoiser import CFGDenoiser, DiscreteEpsDenoiser
from .settings import Settings
from .models.vae import decode_latents


class Interrupted(Exception):
    """The user pressed Interrupt; images finished before it are kept."""


@dataclass
class JobControl:
    """What a running job reports and obeys: progress callback and an interrupt flag."""
    on_progress: Callable[[int, int], None] | None = None  # (model evaluations done, total)
    interrupted: Callable[[], bool] = lambda: False


@dataclass
class GeneratedImage:
    image: Image.Image
    params: GenerationParams  # this image's own params: its seeds, the values used, batch of one


@dataclass
class JobResult:
    images: list[GeneratedImage] = field(default_factory=list)
    interrupted: bool = False
    extra_networks: list = field(default_factory=list)  # <kind:args> tags found in the prompts


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


class _Progress:
    """Counts model evaluations for the progress bar and checks for Interrupt before each one."""

    def __init__(self, control: JobControl, total: int):
        self.control, self.total, self.done = control, total, 0

    def __call__(self):
        if self.control.interrupted():
            raise Interrupted()
        if self.control.on_progress:
            self.control.on_progress(min(self.done, self.total), self.total)
        self.done += 1


def _model_extras(components, params: GenerationParams, device, init: InitLatents | None = None):
    """What some UNets take beside the text: SDXL's size/crop ids; an inpainting model's mask + image latent."""
    arch = components.arch
    time_ids = arch.model_family.time_ids(params.height, params.width)
    concat = None
    if init is not None:
        concat = None if init.concat is None else init.concat.to(device)
    elif arch.inpainting:
        # txt2img on an inpainting model, as A1111: everything masked, the "masked image" all mid-grey. The
        # latent is the VAE's mean (A1111 samples it with the global RNG, which is not reproducible).
        vae = components.vae
        grey = torch.zeros(1, 3, params.height, params.width, device=vae.device, dtype=vae.dtype)
        latent = vae.encode(grey).latent_dist.mean.float() * vae.config.scaling_factor
        concat = torch.cat([torch.ones_like(latent[:, :1]), latent], dim=1).to(device)
    return time_ids, concat


@dataclass
class InitLatents:
    """img2img's starting point (built by img2img.py): the encoded init image and how sampling treats it."""
    latent: torch.Tensor  # (1, C, h, w), scaled like the UNet's latents
    t_enc: int  # schedule entries from the end where sampling starts (samplers.sampling.img2img_steps)
    schedule_steps: int
    keep: torch.Tensor | None = None  # (1, 1, h, w) 1 where the init latent is kept (inpainting), else None
    latent_fill: int | None = None  # masked content 2 "latent noise" / 3 "latent nothing": replaces the masked latent
    concat: torch.Tensor | None = None  # inpainting models: (1, 5, h, w) mask + masked-image latent
    noise_multiplier: float = 1.0
    finish: Callable[[Image.Image], Image.Image] = staticmethod(lambda image: image)  # composite onto the original
    record: dict = field(default_factory=dict)  # request fields as they took effect, for the infotext

    def model_calls(self, sampler) -> int:
        """Sampler steps from this start: k-diffusion t_enc + 1; DDIM len(timesteps[:t_enc]) − 1; PLMS and UniPC
        len(timesteps[:t_enc])."""
        if not sampler.is_timestep_based:
            return self.t_enc + 1
        return max(self.t_enc - (1 if sampler.funcname == "sample_ddim" else 0), 0)

    def start_latent(self, n: int, rng_for_fill) -> torch.Tensor:
        """The batch's init latent; "latent noise" fills the masked part with the batch's seed noise
        (A1111 draws it from the first batch's seeds for every batch; each batch uses its own here)."""
        x0 = self.latent.expand(n, -1, -1, -1)
        if self.keep is not None and self.latent_fill == 2:
            x0 = x0 * self.keep + rng_for_fill() * (1 - self.keep)
        elif self.keep is not None and self.latent_fill == 3:
            x0 = x0 * self.keep
        return x0


# Infotext fields a job computes itself: a pasted infotext's old values must not carry over.
COMPUTED_EXTRA = ("TI hashes", "Pad conds", "Discard penultimate sigma", "Beta schedule alpha",
                  "Beta schedule beta")


@torch.no_grad()
def generate(components, denoiser: DiscreteEpsDenoiser, params: GenerationParams, settings: Settings | None = None,
             control: JobControl | None = None, encoder: PromptEncoder | None = None,
             device: torch.device | None = None, init: InitLatents | None = None) -> JobResult:
    """`device`: where sampling runs; by default the UNet's (with --medvram the UNet waits on the CPU).
    `init`: start from an encoded image instead of pure noise (img2img.py builds it)."""
    params.validate()
    settings = settings or Settings()
    control = control or JobControl()
    plan = sampling.make_plan(params, settings, denoiser, init.schedule_steps if init else params.steps,
                              components.arch.model_family)
    device = device or components.unet.device

    encoder = encoder or PromptEncoder(components.tokenizer, components.text_encoder)
    clip_skip = params.clip_skip or settings.CLIP_stop_at_last_layers
    emphasis = params.emphasis or settings.emphasis
    conditioning, prompt_info = build_conditioning(encoder, params.prompt, params.negative_prompt, params.steps,
                                                   clip_skip, emphasis, zero_empty_negative=components.arch.model_family.zero_empty_negative)

    time_ids, concat = _model_extras(components, params, device, init)
    model_steps = init.model_calls(plan.sampler) if init else params.steps
    progress = _Progress(control, model_steps * plan.model_calls_per_step * params.n_iter)
    count = params.batch_size * params.n_iter
    seeds, subseeds = job_seeds(params, count)
    latent_shape = (components.vae.config.latent_channels, params.height // 8, params.width // 8)
    base = params.replace(batch_size=1, n_iter=1, clip_skip=clip_skip if clip_skip > 1 else None,
                          emphasis=prompt_info.infotext.pop("Emphasis", None), **plan.record)
    base.extra = {k: v for k, v in params.extra.items() if k not in COMPUTED_EXTRA}
    base.extra.update(prompt_info.infotext)
    base.extra.update(plan.extra)
    if init is not None:
        base = base.replace(**init.record)
    elif components.arch.inpainting:  # A1111 records the setting whenever a 9-channel model is conditioned
        base = base.replace(inpainting_mask_weight=settings.inpainting_mask_weight)
    varied = params.subseed_strength != 0
    resized = params.seed_resize_from_w > 0 and params.seed_resize_from_h > 0
    result = JobResult(extra_networks=prompt_info.extra_networks)
    for n in range(params.n_iter):
        batch = slice(n * params.batch_size, (n + 1) * params.batch_size)
        rng = ImageRNG(latent_shape, seeds[batch], subseeds[batch], params.subseed_strength,
                       (params.seed_resize_from_w, params.seed_resize_from_h), plan.ensd, plan.rng_source)
        n = len(seeds[batch])
        x0 = keep = None
        if init is not None:
            x0 = init.start_latent(
                n, lambda: ImageRNG(latent_shape, seeds[batch], source=plan.rng_source).next()).to(device)
            keep = None if init.keep is None else init.keep.to(device)
        model = CFGDenoiser(plan.denoiser, conditioning, params.cfg_scale, on_step=progress, time_ids=time_ids,
                            concat=None if concat is None else concat.expand(n, -1, -1, -1),
                            keep=None if keep is None else (x0, keep))
        try:
            if init is None:
                latents = sampling.sample(plan, model, rng, seeds[batch], device)
            else:
                latents = sampling.sample_img2img(plan, model, rng, seeds[batch], device, x0, init.t_enc,
                                                  init.noise_multiplier)
        except Interrupted:
            result.interrupted = True
            break
        if keep is not None:  # A1111: the kept area is exactly the init latent before decoding
            latents = latents * (1 - keep) + x0 * keep
        if conditioning.padded:
            base.extra["Pad conds"] = "True"
        decoded = latents_to_images(components.vae, latents)
        if init is not None:
            decoded = [init.finish(image) for image in decoded]
        for seed, subseed, image in zip(seeds[batch], subseeds[batch], decoded):
            own = base.replace(
                seed=seed, subseed=subseed if varied else -1, subseed_strength=params.subseed_strength,
                seed_resize_from_w=params.seed_resize_from_w if resized else 0,
                seed_resize_from_h=params.seed_resize_from_h if resized else 0)
            result.images.append(GeneratedImage(image, own))
    if control.on_progress and not result.interrupted:
        control.on_progress(progress.total, progress.total)
    return result
