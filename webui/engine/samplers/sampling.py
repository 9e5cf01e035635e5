"""Running a sampler the way A1111's KDiffusionSampler / CompVisSampler do: which sigmas (or timesteps), which
keyword arguments from the resolved request, which noise, and which infotext fields that produces."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..params import GenerationParams
from ..rng import BrownianNoiseSampler, ImageRNG
from ..settings import Settings
from . import SamplerInfo, get_sampler, schedules, split_sampler_name, timesteps
from .denoiser import DiscreteEpsDenoiser, LCMDenoiser


@dataclass
class Plan:
    """Everything fixed before the first step; `record` are the request fields the infotext gets."""
    sampler: SamplerInfo
    steps: int
    denoiser: DiscreteEpsDenoiser
    sigmas: torch.Tensor | None  # k-diffusion samplers
    timesteps: torch.Tensor | None  # DDIM / PLMS / UniPC
    kwargs: dict
    ensd: int
    rng_source: str
    record: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # infotext fields outside the typed request

    @property
    def model_calls_per_step(self) -> int:
        return self.sampler.model_calls_per_step


def make_plan(params: GenerationParams, settings: Settings, denoiser: DiscreteEpsDenoiser, steps: int,
              family=None) -> Plan:
    """`params`: the job's resolved request (jobs.resolve: no field left for a setting to fill); `settings`
    gives only what no request field carries (discard-penultimate, Beta parameters). `family`: the model's
    ModelFamily, for its schedule tables (Align Your Steps); None = SD1.5's."""
    name, schedule_label = split_sampler_name(params.sampler_name, params.scheduler)
    sampler = get_sampler(name)
    if sampler.options.get("denoiser") == "lcm":
        denoiser = LCMDenoiser(denoiser.unet, denoiser.alphas_cumprod)
    # Knobs a sampler doesn't use are not recorded (A1111 writes only what took effect).
    record: dict = {"sampler_name": sampler.name, "scheduler": schedule_label, **dict.fromkeys(RECORDED_KNOBS)}
    extra: dict = {}
    kwargs: dict = {}
    sigmas = steps_t = None
    if sampler.is_timestep_based:
        steps_t = timesteps.get_timesteps(steps)
        eta = params.eta_ddim
        if sampler.call.eta:
            kwargs["eta"] = eta
            record["eta_ddim"] = eta if eta != 0 else None
    else:
        sigmas, schedule_record = _sigmas(sampler, schedule_label, params, settings, denoiser, steps, extra,
                                          family)
        record.update(schedule_record)
        eta = params.eta
        if sampler.call.eta:
            kwargs["eta"] = eta
            record["eta"] = eta if eta != 1.0 else None
        if sampler.call.churn:
            kwargs.update(_churn_knobs(params, record))
        if "solver_type" in sampler.options:
            kwargs["solver_type"] = sampler.options["solver_type"]
    # A1111 re-seeds step noise with ENSD whatever the sampler, but writes it only where it matters.
    uses_ensd = params.ensd != 0 and eta != 0 and sampler.options.get("uses_ensd", False)
    record["ensd"] = params.ensd if uses_ensd else None
    record["rng"] = params.rng
    return Plan(sampler, steps, denoiser, sigmas, steps_t, kwargs, params.ensd, params.rng, record, extra)


def _churn_knobs(params: GenerationParams, record: dict) -> dict:
    """A1111's sampler_extra_params for Euler, Heun and DPM2: passed and recorded only when not the default."""
    kwargs = {}
    for knob, default in CHURN_DEFAULTS.items():
        value = getattr(params, knob)
        if knob == "s_tmax" and value == 0:
            value = float("inf")  # A1111: 0 means no upper bound
        if value != default:
            kwargs[knob] = value
        record[knob] = value if value != default else None
    return kwargs


RECORDED_KNOBS = ("eta", "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max", "rho")
CHURN_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}


def _sigmas(sampler, schedule_label, params, settings, denoiser, steps, extra, family):
    discard = sampler.options.get("discard_next_to_last_sigma", False)
    if settings.always_discard_next_to_last_sigma and not discard:
        discard = True
        extra["Discard penultimate sigma"] = "True"
    n = steps + 1 if discard else steps
    label = sampler.default_schedule if schedule_label == "Automatic" else schedule_label
    record = {}
    if label is None:  # no schedule of its own: the model's discrete one, and infotext keeps "Automatic"
        sigmas = denoiser.get_sigmas(n)
    else:
        record["scheduler"] = label
        sigma_min = params.sigma_min or None
        sigma_max = params.sigma_max or None
        rho = params.rho or None
        schedule = schedules.find_schedule(label)
        if sigma_min is not None and sigma_min != float(denoiser.sigma_min):
            record["sigma_min"] = sigma_min
        else:
            sigma_min = None
        if sigma_max is not None and sigma_max != float(denoiser.sigma_max):
            record["sigma_max"] = sigma_max
        else:
            sigma_max = None
        if rho is not None and schedule.default_rho != -1 and rho != schedule.default_rho:
            record["rho"] = rho
        else:
            rho = None
        if schedule.label == "Beta":
            extra["Beta schedule alpha"] = str(settings.beta_dist_alpha)
            extra["Beta schedule beta"] = str(settings.beta_dist_beta)
        sigmas = schedules.get_sigmas(label, n, denoiser, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                                      beta_alpha=settings.beta_dist_alpha, beta_beta=settings.beta_dist_beta,
                                      ays_sigmas=family.ays_sigmas if family is not None else None)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu(), record


@dataclass
class Slice:
    """Where a sampler starts and what it walks: x at the first sigma (or timestep) of `sigmas` (or
    `timesteps`). DPM fast / adaptive take `span` = (sigma_min, sigma_max, n) instead of a schedule. The job's
    start (jobs/start.py) cuts it from the plan: the whole schedule from noise, its tail for img2img."""
    x: torch.Tensor
    sigmas: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    span: tuple[float, float, int] | None = None
    is_img2img: bool = False


class NaNInLatent(UserError):
    """The model produced NaN or infinity: decoded, the latent would be saved as a black picture."""


class NaNCheck:
    """A sampler callback stopping the job at the first step whose prediction is not finite (A1111's
    --disable-nan-check turns its check off). On the CPU each step is checked at once (nothing to wait for); on
    a GPU (`deferred`) a step only records, on the device, the first step that went wrong — no host sync in the
    step loop — and check_result raises with that step's number after the last step."""

    def __init__(self, total: int, deferred: bool = False):
        self.total = total  # the sampler's steps, for the message
        self.deferred = deferred
        self.first_bad = None  # deferred: a device tensor, the first bad step (or `total + 1`: none yet)

    def message(self, step: int) -> str:
        of = f" of {self.total}" if step <= self.total else ""
        return (f"NaN in the latent at step {step}{of}: the model produced non-finite values, which would be "
                f"saved as a black picture. Try full precision (--no-half), another VAE or sampler, or a lower "
                f"CFG scale; --disable-nan-check turns this check off")

    def __call__(self, info: dict) -> None:
        latent = info.get("denoised", info.get("x"))
        if latent is None:
            return
        step = int(info.get("i", 0)) + 1
        if self.deferred:
            if self.first_bad is None:
                self.first_bad = torch.full((), self.total + 1, dtype=torch.int64, device=latent.device)
            bad = ~torch.isfinite(latent).all()
            self.first_bad = torch.where(bad & (self.first_bad > self.total), step, self.first_bad)
        elif not bool(torch.isfinite(latent).all()):
            raise NaNInLatent(self.message(step))

    def check_result(self, latents: torch.Tensor) -> torch.Tensor:
        """After the last step (one sync): a deferred check's first bad step, then the last step's update,
        which no callback sees."""
        if self.first_bad is not None:
            first = int(self.first_bad)
            if first <= self.total:
                raise NaNInLatent(self.message(first))
        if not bool(torch.isfinite(latents).all()):
            raise NaNInLatent(self.message(self.total))
        return latents


def run(plan: Plan, model, start: Slice, rng: ImageRNG, seeds: list[int], device, callback=None) -> torch.Tensor:
    """The plan's sampler from `start` to the end: `model` is the CFG denoiser (x, sigma) → denoised. Step noise:
    one Brownian tree per image over the whole schedule (SDE samplers), or the per-image generators.
    `callback(info)` after each step, k-diffusion's: info["i"] (from 0), info["x"], info["denoised"]."""
    sampler, call = plan.sampler, plan.sampler.call
    kwargs = dict(plan.kwargs, callback=callback)
    if sampler.is_timestep_based:
        if call.is_img2img and start.is_img2img:
            kwargs["is_img2img"] = True  # UniPC starts at the last given timestep, not at t = 1 (A1111)
        return sampler.func(model, start.x, start.timesteps, plan.denoiser.alphas_cumprod,
                            noise_sampler=lambda sigma, sigma_next: rng.next().to(device), **kwargs)
    if call.span:
        kwargs["sigma_min"], kwargs["sigma_max"] = start.span[0], start.span[1]
        if call.n:
            kwargs["n"] = start.span[2]
    else:
        kwargs["sigmas"] = start.sigmas
    if sampler.options.get("brownian_noise"):
        positive = plan.sigmas[plan.sigmas > 0]
        kwargs["noise_sampler"] = BrownianNoiseSampler(start.x, positive.min(), plan.sigmas.max(), seeds)
    else:
        kwargs["noise_sampler"] = lambda sigma, sigma_next: rng.next().to(device)
    return sampler.func(model, start.x, **kwargs)


def img2img_steps(steps: int, strength: float, fix_steps: bool = False) -> tuple[int, int]:
    """A1111's setup_img2img_steps: (schedule length, t_enc). By default the schedule has `steps` entries and
    sampling starts t_enc = int(strength·steps) entries before its end; with "do exactly the amount of steps
    the slider specifies" the schedule is stretched to steps / strength instead."""
    strength = min(strength, 0.999)
    if fix_steps:
        return (int(steps / strength) if strength > 0 else 0), steps - 1
    return steps, int(strength * steps)
