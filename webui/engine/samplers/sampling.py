"""Running a sampler the way A1111's KDiffusionSampler / CompVisSampler do: which sigmas (or timesteps), which
keyword arguments from the request and the settings, which noise, and which infotext fields that produces."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

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
        return 2 if self.sampler.options.get("second_order") else 1


def _pick(value, setting):
    return setting if value is None else value


def make_plan(params: GenerationParams, settings: Settings, denoiser: DiscreteEpsDenoiser, steps: int,
              family=None) -> Plan:
    """`family`: the model's ModelFamily, for its schedule tables (Align Your Steps); None = SD1.5's."""
    name, schedule_label = split_sampler_name(params.sampler_name, params.scheduler)
    sampler = get_sampler(name)
    if sampler.options.get("denoiser") == "lcm":
        denoiser = LCMDenoiser(denoiser.unet, denoiser.alphas_cumprod)
    # Knobs a sampler doesn't use are not recorded (A1111 writes only what took effect).
    record: dict = {"sampler_name": sampler.name, "scheduler": schedule_label, **dict.fromkeys(RECORDED_KNOBS)}
    extra: dict = {}
    func = sampler.func
    accepts = inspect.signature(func).parameters
    kwargs: dict = {}

    sigmas = steps_t = None
    if sampler.is_timestep_based:
        steps_t = timesteps.get_timesteps(steps)
        eta = _pick(params.eta_ddim, settings.eta_ddim)
        if "eta" in accepts:
            kwargs["eta"] = eta
            record["eta_ddim"] = eta if eta != 0 else None
    else:
        sigmas, schedule_record = _sigmas(sampler, schedule_label, params, settings, denoiser, steps, extra,
                                          family)
        record.update(schedule_record)
        eta = _pick(params.eta, settings.eta_ancestral)
        if "eta" in accepts:
            kwargs["eta"] = eta
            record["eta"] = eta if eta != 1.0 else None
        if sampler.funcname in CHURN_FUNCS:
            for knob, default in CHURN_DEFAULTS.items():
                value = _pick(getattr(params, knob), getattr(settings, knob))
                if knob == "s_tmax" and value == 0:
                    value = float("inf")  # A1111: 0 means no upper bound
                if value != default:
                    kwargs[knob] = value
                record[knob] = value if value != default else None
        for key in ("solver_type",):
            if key in sampler.options:
                kwargs[key] = sampler.options[key]
    ensd = _pick(params.ensd, settings.eta_noise_seed_delta)
    # A1111 re-seeds step noise with ENSD whatever the sampler, but writes it only where it matters.
    uses_ensd = ensd != 0 and eta != 0 and sampler.options.get("uses_ensd", False)
    record["ensd"] = ensd if uses_ensd else None
    rng_source = _pick(params.rng, settings.randn_source)
    record["rng"] = rng_source
    return Plan(sampler, steps, denoiser, sigmas, steps_t, kwargs, ensd, rng_source, record, extra)


RECORDED_KNOBS = ("eta", "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max", "rho")
CHURN_FUNCS = {"sample_euler", "sample_heun", "sample_dpm_2"}  # A1111's sampler_extra_params
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
        sigma_min = _pick(params.sigma_min, settings.sigma_min) or None
        sigma_max = _pick(params.sigma_max, settings.sigma_max) or None
        rho = _pick(params.rho, settings.rho) or None
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


def _run(plan: Plan, model, x: torch.Tensor, rng: ImageRNG, seeds: list[int], device, sigmas: torch.Tensor,
         span: tuple[float, float, int]) -> torch.Tensor:
    """A k-diffusion sampler over `sigmas` from x; DPM fast / adaptive get `span` (sigma_min, sigma_max, n)
    instead. Step noise: one Brownian tree per image over the whole schedule, or the per-image generators."""
    kwargs = dict(plan.kwargs)
    accepts = inspect.signature(plan.sampler.func).parameters
    if "sigma_min" in accepts:
        kwargs["sigma_min"], kwargs["sigma_max"] = span[0], span[1]
        if "n" in accepts:
            kwargs["n"] = span[2]
    else:
        kwargs["sigmas"] = sigmas
    if plan.sampler.options.get("brownian_noise"):
        positive = plan.sigmas[plan.sigmas > 0]
        kwargs["noise_sampler"] = BrownianNoiseSampler(x, positive.min(), plan.sigmas.max(), seeds)
    else:
        kwargs["noise_sampler"] = lambda sigma, sigma_next: rng.next().to(device)
    return plan.sampler.func(model, x, **kwargs)


def sample(plan: Plan, model, rng: ImageRNG, seeds: list[int], device) -> torch.Tensor:
    """Initial noise → latents. `model` is the CFG denoiser (x, sigma) → denoised."""
    x = rng.next().to(device)
    if plan.sampler.is_timestep_based:
        return plan.sampler.func(model, x, plan.timesteps, plan.denoiser.alphas_cumprod,
                                 noise_sampler=lambda sigma, sigma_next: rng.next().to(device), **plan.kwargs)
    # DPM fast / adaptive run between the model's extreme sigmas
    span = (float(plan.denoiser.sigma_min), float(plan.denoiser.sigma_max), plan.steps)
    return _run(plan, model, x * plan.sigmas[0], rng, seeds, device, plan.sigmas, span)


def img2img_steps(steps: int, strength: float, fix_steps: bool = False) -> tuple[int, int]:
    """A1111's setup_img2img_steps: (schedule length, t_enc). By default the schedule has `steps` entries and
    sampling starts t_enc = int(strength·steps) entries before its end; with "do exactly the amount of steps
    the slider specifies" the schedule is stretched to steps / strength instead."""
    strength = min(strength, 0.999)
    if fix_steps:
        return (int(steps / strength) if strength > 0 else 0), steps - 1
    return steps, int(strength * steps)


def sample_img2img(plan: Plan, model, rng: ImageRNG, seeds: list[int], device, init_latent: torch.Tensor,
                   t_enc: int, noise_multiplier: float = 1.0) -> torch.Tensor:
    """Start from `init_latent` noised to the level t_enc entries from the end of the schedule, as A1111's
    sample_img2img: k-diffusion samplers get sigmas[steps - t_enc - 1:] (t_enc + 1 model steps), timestep
    samplers timesteps[:t_enc] with the latent noised to timesteps[t_enc]."""
    noise = rng.next().to(device) * noise_multiplier
    x0 = init_latent.to(device)
    if plan.sampler.is_timestep_based:
        ac = plan.denoiser.alphas_cumprod.detach().to("cpu", torch.float32)
        t_start = int(plan.timesteps[min(t_enc, len(plan.timesteps) - 1)])
        xi = x0 * ac[t_start].sqrt().item() + noise * (1 - ac[t_start]).sqrt().item()
        kwargs = dict(plan.kwargs)
        if "is_img2img" in inspect.signature(plan.sampler.func).parameters:
            kwargs["is_img2img"] = True  # UniPC starts at the last given timestep, not at t = 1 (A1111)
        return plan.sampler.func(model, xi, plan.timesteps[:t_enc], plan.denoiser.alphas_cumprod,
                                 noise_sampler=lambda sigma, sigma_next: rng.next().to(device), **kwargs)
    sched = plan.sigmas[-(t_enc + 2):]  # = sigmas[steps - t_enc - 1:]
    # DPM fast / adaptive: the last sigma is 0, which they cannot take
    span = (float(sched[-2]), float(sched[0]), len(sched) - 1)
    return _run(plan, model, x0 + noise * sched[0], rng, seeds, device, sched, span)
