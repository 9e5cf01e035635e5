"""Generation jobs: noise per image seed → sampler over the CFG denoiser → VAE decode → PIL images."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import prompts, samplers
from .params import GenerationParams
from .rng import ImageRNG, job_seeds
from .samplers.denoiser import CFGDenoiser, DiscreteEpsDenoiser


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
    params: GenerationParams  # this image's own params: its seed, batch of one


@dataclass
class Txt2ImgResult:
    images: list[GeneratedImage] = field(default_factory=list)
    interrupted: bool = False


def latents_to_images(vae, latents: torch.Tensor) -> list[Image.Image]:
    scale = vae.config.scaling_factor
    out = []
    for latent in latents:  # one at a time: VAE decode memory grows fast with batch
        decoded = vae.decode((latent[None] / scale).to(vae.device, vae.dtype), return_dict=False)[0]
        pixels = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        out.append(Image.fromarray(pixels[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)))
    return out


@torch.no_grad()
def txt2img(components, denoiser: DiscreteEpsDenoiser, params: GenerationParams,
            control: JobControl | None = None) -> Txt2ImgResult:
    params.validate()
    control = control or JobControl()
    sampler = samplers.get_sampler(params.sampler_name)
    samplers.check_scheduler(params.scheduler)
    device = components.unet.device

    encode = lambda text: prompts.encode_prompt(components.tokenizer, components.text_encoder, text)
    cond, uncond = encode(params.prompt), encode(params.negative_prompt)

    sigmas = denoiser.get_sigmas(params.steps)
    evaluations_per_batch = params.steps
    total = evaluations_per_batch * params.n_iter
    done = 0

    def on_step():
        nonlocal done
        if control.interrupted():
            raise Interrupted()
        if control.on_progress:
            control.on_progress(done, total)
        done += 1

    seeds = job_seeds(params.seed, params.batch_size * params.n_iter)
    latent_shape = (components.unet.config.in_channels, params.height // 8, params.width // 8)
    result = Txt2ImgResult()
    for n in range(params.n_iter):
        batch_seeds = seeds[n * params.batch_size:(n + 1) * params.batch_size]
        rng = ImageRNG(latent_shape, batch_seeds)
        x = rng.next().to(device) * sigmas[0]
        n_img = len(batch_seeds)
        model = CFGDenoiser(denoiser, cond.expand(n_img, -1, -1), uncond.expand(n_img, -1, -1),
                            params.cfg_scale, on_step=on_step)
        try:
            latents = sampler.func(model, x, sigmas, noise_sampler=lambda s, s_next: rng.next().to(device))
        except Interrupted:
            result.interrupted = True
            break
        for seed, image in zip(batch_seeds, latents_to_images(components.vae, latents)):
            result.images.append(GeneratedImage(image, params.replace(seed=seed, batch_size=1, n_iter=1)))
    if control.on_progress and not result.interrupted:
        control.on_progress(total, total)
    return result
