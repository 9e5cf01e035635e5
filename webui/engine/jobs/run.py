"""The one job loop, for txt2img and img2img alike: the start (jobs/start.py: noise, or an init latent with its
mask) → the sampler over the CFG denoiser → VAE decode → PIL images with their own params."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from ..models import token_merging
from ..params import GenerationParams
from ..patches import JobPatches
from ..prompts.conditioning import build_conditioning
from ..prompts.encoder import PromptEncoder
from ..rng import ImageRNG, job_seeds
from ..samplers import sampling
from ..samplers.denoiser import CFGDenoiser, DiscreteEpsDenoiser
from ..settings import Settings
from . import decode, hires
from .resolve import resolve
from .start import FromImage, FromNoise


class Interrupted(Exception):
    """The user pressed Interrupt; images finished before it are kept."""


class Skipped(Exception):
    """The user pressed Skip: the batch being sampled is dropped and the next one starts."""


@dataclass
class JobControl:
    """What a running job reports and obeys: progress callback and an interrupt flag."""
    on_progress: Callable[[int, int], None] | None = None  # (model evaluations done, total)
    interrupted: Callable[[], bool] = lambda: False
    on_image: Callable[[GeneratedImage], None] | None = None  # each image as soon as it is decoded (saving)
    nan_check: bool = True  # stop at a non-finite latent instead of saving a black picture (--disable-nan-check)
    skipped: Callable[[], bool] = lambda: False  # checked like `interrupted`; drops the current batch only
    on_batch: Callable[[int, int], None] | None = None  # (batch index from 0, batches) as each batch starts
    # after each sampler step: (step from 1, the sampler's steps, the batch's predicted latents); the queue's
    # task keeps a cheap preview of it (manager.py)
    on_step: Callable[[int, int, torch.Tensor], None] | None = None
    # the Script API's hook points (webui/scripts): before each sampling pass ("first" or "hires", the batch's
    # start latent, the conditioning), before the hires pass, a batch's pictures (may be replaced), each picture
    # with its params (may be replaced) before it is kept and saved
    before_batch: Callable[[int, list, list], None] | None = None  # (batch index, its seeds, its variation seeds)
    before_sampling: Callable[[str, torch.Tensor, object], None] | None = None
    before_hires: Callable[[int], None] | None = None
    postprocess_batch: Callable[[list, int], list] | None = None
    postprocess_image: Callable[[GeneratedImage], GeneratedImage] | None = None


@dataclass
class GeneratedImage:
    image: Image.Image
    params: GenerationParams  # this image's own params: its seeds, the values used, batch of one


@dataclass
class JobResult:
    images: list[GeneratedImage] = field(default_factory=list)
    interrupted: bool = False
    extra_networks: list = field(default_factory=list)  # <kind:args> tags found in the prompts


class _Progress:
    """Counts model evaluations for the progress bar and checks for Interrupt before each one."""

    def __init__(self, control: JobControl, total: int):
        self.control, self.total, self.done = control, total, 0

    def __call__(self):
        if self.control.interrupted():
            raise Interrupted()
        if self.control.skipped():
            raise Skipped()
        if self.control.on_progress:
            self.control.on_progress(min(self.done, self.total), self.total)
        self.done += 1


def _txt2img_concat(components, params: GenerationParams) -> torch.Tensor:
    """txt2img on an inpainting model, as A1111: everything masked, the "masked image" all mid-grey. The latent
    is the VAE's mean (A1111 samples it with the global RNG, which is not reproducible)."""
    vae = components.vae
    grey = torch.zeros(1, 3, params.height, params.width, device=vae.device, dtype=vae.dtype)
    latent = vae.encode(grey).latent_dist.mean.float() * vae.config.scaling_factor
    return torch.cat([torch.ones_like(latent[:, :1]), latent], dim=1)


def _start_record(components, params: GenerationParams, start, second=None) -> dict:
    """The request fields the start decides for the infotext: img2img's as they took effect; txt2img writes the
    conditioning mask weight only for a 9-channel model (A1111 records it whenever one is conditioned), and the
    hires fields when hires fix is on (nothing of it otherwise)."""
    blank_hires = dict(enable_hr=False, hr_upscaler=None, hr_second_pass_steps=0, hr_checkpoint_name=None,
                       hr_sampler_name=None, hr_scheduler=None, hr_prompt="", hr_negative_prompt="")
    if isinstance(start, FromImage):
        return {**blank_hires, **start.record}
    weight = params.inpainting_mask_weight if components.arch.inpainting else None
    hires_fields = second.record if second is not None else {**blank_hires, "denoising_strength": None}
    return dict(initial_noise_multiplier=None, inpainting_mask_weight=weight, **hires_fields)


# Infotext fields a job computes itself: a pasted infotext's old values must not carry over.
COMPUTED_EXTRA = ("TI hashes", "Pad conds", "Discard penultimate sigma", "Beta schedule alpha",
                  "Beta schedule beta")


def _infotext_base(params: GenerationParams, plan, prompt_info, record: dict) -> GenerationParams:
    """The params every image of the job writes, before its own seeds: what took effect, nothing pasted."""
    base = params.replace(batch_size=1, n_iter=1, clip_skip=params.clip_skip if params.clip_skip > 1 else None,
                          emphasis=prompt_info.infotext.pop("Emphasis", None), **plan.record,
                          token_merging_ratio=params.token_merging_ratio or None,  # written only when not 0
                          token_merging_ratio_hr=params.token_merging_ratio_hr
                          if params.enable_hr and params.token_merging_ratio_hr else None)
    base.extra = {k: v for k, v in params.extra.items() if k not in COMPUTED_EXTRA}
    base.extra.update(prompt_info.infotext)
    base.extra.update(plan.extra)
    return base.replace(**record)


def _own_params(base: GenerationParams, params: GenerationParams, seed: int, subseed: int) -> GenerationParams:
    varied = params.subseed_strength != 0
    resized = params.seed_resize_from_w > 0 and params.seed_resize_from_h > 0
    return base.replace(seed=seed, subseed=subseed if varied else -1, subseed_strength=params.subseed_strength,
                        seed_resize_from_w=params.seed_resize_from_w if resized else 0,
                        seed_resize_from_h=params.seed_resize_from_h if resized else 0)


def _step_callback(nan_check, on_step, steps: int):
    """The sampler's per-step callback: the NaN check, then the step report."""
    if on_step is None:
        return nan_check

    def callback(info: dict) -> None:
        if nan_check is not None:
            nan_check(info)
        latent = info.get("denoised", info.get("x"))
        if latent is not None:
            on_step(min(int(info.get("i", 0)) + 1, steps), steps, latent)
    return callback


@torch.no_grad()
def generate(components, denoiser: DiscreteEpsDenoiser, params: GenerationParams, settings: Settings | None = None,
             control: JobControl | None = None, encoder: PromptEncoder | None = None,
             device: torch.device | None = None, start: FromNoise | FromImage | None = None,
             patches: JobPatches | None = None, upscaler_models=None, hires_model=None) -> JobResult:
    """`settings`: the job's snapshot (the manager takes it under its lock); `params` is resolved against it.
    `device`: where sampling runs; by default the UNet's (with --medvram the UNet waits on the CPU).
    `start`: FromImage (jobs/img2img.py builds it) or, by default, noise. `patches`: the job's denoiser-side
    patches (model wrappers, CFG function and hooks); the manager applies the model-side ones. `upscaler_models`:
    the user's upscaler files, for hires fix's pixel upscale; `hires_model`: hires.HiresModel, the Hires
    checkpoint when it is another model (the manager loads it)."""
    settings = settings or Settings()
    params = resolve(params.validate(), settings)
    control = control or JobControl()
    start = start or FromNoise(params.steps)
    family = components.arch.model_family
    plan = sampling.make_plan(params, settings, denoiser, start.schedule_steps, family)
    device = device or components.unet.device

    encoder = encoder or PromptEncoder(components.tokenizer, components.text_encoder)
    conditioning, prompt_info = build_conditioning(encoder, params.prompt, params.negative_prompt, params.steps,
                                                   params.clip_skip, params.emphasis, family.zero_empty_negative)
    time_ids = family.time_ids(params.height, params.width)
    concat = start.concat
    if concat is None and components.arch.inpainting:
        concat = _txt2img_concat(components, params)
    concat = None if concat is None else concat.to(device)
    second = None
    if params.enable_hr and not start.is_img2img:
        second = hires.SecondPass.prepare(components, denoiser, params, settings, plan, encoder, conditioning,
                                          upscaler_models, hires_model)
    steps = start.sampling_steps(plan)
    calls = steps * plan.model_calls_per_step + (second.model_calls if second is not None else 0)
    progress = _Progress(control, calls * params.n_iter)
    deferred = device.type == "cuda"  # no host sync per step on a GPU
    nan_check = sampling.NaNCheck(steps, deferred) if control.nan_check else None
    step_callback = _step_callback(nan_check, control.on_step, steps)
    seeds, subseeds = job_seeds(params, params.batch_size * params.n_iter)
    latent_shape = (components.vae.config.latent_channels, params.height // 8, params.width // 8)
    base = _infotext_base(params, plan, prompt_info, _start_record(components, params, start, second))
    result = JobResult(extra_networks=prompt_info.extra_networks)
    for batch in range(params.n_iter):
        batch_seeds = seeds[batch * params.batch_size:(batch + 1) * params.batch_size]
        batch_subseeds = subseeds[batch * params.batch_size:(batch + 1) * params.batch_size]
        rng = ImageRNG(latent_shape, batch_seeds, batch_subseeds, params.subseed_strength,
                       (params.seed_resize_from_w, params.seed_resize_from_h), plan.ensd, plan.rng_source)
        if control.on_batch is not None:
            control.on_batch(batch, params.n_iter)
        if control.before_batch is not None:
            control.before_batch(batch, batch_seeds, batch_subseeds)
        begin, keep = start.begin(plan, rng, batch_seeds, device)
        n = len(batch_seeds)
        model = CFGDenoiser(plan.denoiser, conditioning, params.cfg_scale, on_step=progress, time_ids=time_ids,
                            concat=None if concat is None else concat.expand(n, -1, -1, -1), keep=keep,
                            patches=patches, total_steps=steps)
        try:
            if control.before_sampling is not None:
                control.before_sampling("first", begin.x, conditioning)
            with token_merging.merged(components.unet, params.token_merging_ratio):
                latents = sampling.run(plan, model, begin, rng, batch_seeds, device, callback=step_callback)
            if nan_check is not None:
                nan_check.check_result(latents)
            latents = start.finish_latents(latents, keep)
            if second is not None:
                if control.before_hires is not None:
                    control.before_hires(batch)
                latents = second.run(
                    latents, batch_seeds, batch_subseeds, device, progress,
                    lambda n: _step_callback(sampling.NaNCheck(n) if control.nan_check else None, control.on_step, n),
                    lambda w, h, n: _txt2img_concat(components, params.replace(width=w, height=h)).to(device).expand(
                        n, -1, -1, -1) if components.arch.inpainting else None, patches,
                    control.before_sampling)
        except Interrupted:
            result.interrupted = True
            break
        except Skipped:
            progress.done = (batch + 1) * calls
            continue
        if conditioning.padded:
            base.extra["Pad conds"] = "True"
        images = [start.finish(image) for image in decode.latents_to_images(components.vae, latents)]
        if control.postprocess_batch is not None:
            images = control.postprocess_batch(images, batch)
        for seed, subseed, image in zip(batch_seeds, batch_subseeds, images):
            item = GeneratedImage(image, _own_params(base, params, seed, subseed))
            if control.postprocess_image is not None:
                item = control.postprocess_image(item)
            result.images.append(item)
            if control.on_image is not None:
                control.on_image(result.images[-1])
    if control.on_progress and not result.interrupted:
        control.on_progress(progress.total, progress.total)
    return result
