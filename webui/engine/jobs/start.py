"""Where a job starts: from noise (txt2img) or from an encoded image (img2img, inpainting). One interface, so
txt2img and img2img run the same loop (jobs/run.py): the start cuts the schedule, counts the sampler's steps for
every sampler family, gives the per-step blend of a kept area, and composites the final picture."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from ..rng import ImageRNG
from ..samplers.sampling import Plan, Slice


@dataclass
class FromNoise:
    """txt2img: the whole schedule from the seeds' noise."""
    schedule_steps: int
    keep = None  # no kept area: nothing blended per step
    concat = None  # an inpainting model's extra channels come from the job (txt2img conditioning)
    is_img2img = False

    def sampling_steps(self, plan: Plan) -> int:
        return plan.sampler.sampling_steps(self.schedule_steps)

    def begin(self, plan: Plan, rng: ImageRNG, seeds: list[int], device) -> tuple[Slice, None]:
        x = rng.next().to(device)
        if plan.sampler.is_timestep_based:
            return Slice(x, timesteps=plan.timesteps), None
        # DPM fast / adaptive run between the model's extreme sigmas
        span = (float(plan.denoiser.sigma_min), float(plan.denoiser.sigma_max), plan.steps)
        return Slice(x * plan.sigmas[0], sigmas=plan.sigmas, span=span), None

    def finish_latents(self, latents: torch.Tensor, keep) -> torch.Tensor:
        return latents

    def finish(self, image: Image.Image) -> Image.Image:
        return image


@dataclass
class FromImage:
    """img2img's start (built by jobs/img2img.py): the encoded init image, noised to the schedule entry t_enc
    from the end (A1111's sample_img2img), and how its kept area and composite work."""
    latent: torch.Tensor  # (1, C, h, w), scaled like the UNet's latents
    t_enc: int  # schedule entries from the end where sampling starts (samplers.sampling.img2img_steps)
    schedule_steps: int
    keep: torch.Tensor | None = None  # (1, 1, h, w) 1 where the init latent is kept (inpainting), else None
    latent_fill: int | None = None  # masked content 2 "latent noise" / 3 "latent nothing": replaces the masked latent
    concat: torch.Tensor | None = None  # inpainting models: (1, 5, h, w) mask + masked-image latent
    noise_multiplier: float = 1.0
    finish: Callable[[Image.Image], Image.Image] = staticmethod(lambda image: image)  # composite onto the original
    record: dict = field(default_factory=dict)  # request fields as they took effect, for the infotext
    is_img2img = True

    def sampling_steps(self, plan: Plan) -> int:
        return plan.sampler.sampling_steps(self.schedule_steps, self.t_enc)

    def start_latent(self, n: int, rng_for_fill) -> torch.Tensor:
        """The batch's init latent; "latent noise" fills the masked part with the batch's seed noise
        (A1111 draws it from the first batch's seeds for every batch; each batch uses its own here)."""
        x0 = self.latent.expand(n, -1, -1, -1)
        if self.keep is not None and self.latent_fill == 2:
            x0 = x0 * self.keep + rng_for_fill() * (1 - self.keep)
        elif self.keep is not None and self.latent_fill == 3:
            x0 = x0 * self.keep
        return x0

    def begin(self, plan: Plan, rng: ImageRNG, seeds: list[int], device):
        """(the slice to sample, (x0, keep) to blend in at every step or None). k-diffusion samplers get
        sigmas[steps − t_enc − 1:] (t_enc + 1 steps), timestep samplers timesteps[:t_enc] with the latent noised
        to timesteps[t_enc]."""
        fill_rng = lambda: ImageRNG(rng.shape, seeds, source=plan.rng_source).next()  # noqa: E731
        x0 = self.start_latent(len(seeds), fill_rng).to(device)
        keep = None if self.keep is None else (x0, self.keep.to(device))
        noise = rng.next().to(device) * self.noise_multiplier
        if plan.sampler.is_timestep_based:
            ac = plan.denoiser.alphas_cumprod.detach().to("cpu", torch.float32)
            t_start = int(plan.timesteps[min(self.t_enc, len(plan.timesteps) - 1)])
            x = x0 * ac[t_start].sqrt().item() + noise * (1 - ac[t_start]).sqrt().item()
            return Slice(x, timesteps=plan.timesteps[:self.t_enc], is_img2img=True), keep
        sched = plan.sigmas[-(self.t_enc + 2):]  # = sigmas[steps - t_enc - 1:]
        # DPM fast / adaptive: the last sigma is 0, which they cannot take
        span = (float(sched[-2]), float(sched[0]), len(sched) - 1)
        return Slice(x0 + noise * sched[0], sigmas=sched, span=span, is_img2img=True), keep

    def finish_latents(self, latents: torch.Tensor, keep) -> torch.Tensor:
        if keep is None:
            return latents
        x0, mask = keep  # A1111: the kept area is exactly the init latent before decoding
        return latents * (1 - mask) + x0 * mask
