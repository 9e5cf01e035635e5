"""The sampler registry under A1111 1.10's labels, aliases and option flags: one table for the UI, the CLI,
the infotext reader and the API."""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UserError
from .schedules import SCHEDULES, find_schedule


class UnknownSampler(UserError, ValueError):
    pass


@dataclass(frozen=True)
class SamplerCall:
    """What a sampler function takes beyond (model, x, …), read once from its signature when it is registered,
    so running a sampler needs no introspection."""
    eta: bool
    churn: bool  # s_churn, s_tmin, s_tmax, s_noise (A1111's sampler_extra_params)
    span: bool  # DPM fast / adaptive: sigma_min and sigma_max instead of a sigma schedule …
    n: bool  # … and a step count (fast)
    is_img2img: bool  # UniPC: img2img starts at the last given timestep

    @classmethod
    def of(cls, func) -> SamplerCall:
        takes = inspect.signature(func).parameters
        return cls(eta="eta" in takes, churn="s_churn" in takes, span="sigma_min" in takes, n="n" in takes,
                   is_img2img="is_img2img" in takes)


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    module: str  # "kdiffusion" (sigma-based) or "timesteps" (A1111's DDIM/PLMS/UniPC)
    funcname: str
    aliases: tuple[str, ...] = ()
    # A1111's option flags: scheduler (what "Automatic" means), second_order, brownian_noise, uses_ensd,
    # discard_next_to_last_sigma, solver_type, default_eta_is_0; plus ours: denoiser ("lcm"), pairwise_timesteps
    # (DDIM steps between consecutive timesteps, so a slice of n timesteps is n − 1 steps).
    options: dict = field(default_factory=dict)
    func: Callable = field(default=None, compare=False, repr=False)
    call: SamplerCall = field(default=None, compare=False, repr=False)

    @property
    def is_timestep_based(self) -> bool:
        return self.module == "timesteps"

    @property
    def default_schedule(self) -> str | None:
        """The schedule label "Automatic" means for this sampler; None = the model's own discrete schedule."""
        key = self.options.get("scheduler")
        return find_schedule(key).label if key else None

    @property
    def model_calls_per_step(self) -> int:
        return 2 if self.options.get("second_order") else 1

    def sampling_steps(self, steps: int, t_enc: int | None = None) -> int:
        """Steps the sampler takes: `steps` from noise; from an img2img start t_enc entries before the end of the
        schedule, as A1111: k-diffusion t_enc + 1 (the slice has t_enc + 2 sigmas), DDIM t_enc − 1, PLMS and UniPC
        t_enc."""
        if t_enc is None:
            return steps
        if not self.is_timestep_based:
            return t_enc + 1
        return max(t_enc - (1 if self.options.get("pairwise_timesteps") else 0), 0)


def _register(name, module, funcname, aliases, options) -> SamplerInfo:
    func = getattr(importlib.import_module(f"{__name__}.{module}"), funcname)
    return SamplerInfo(name, module, funcname, tuple(aliases), options, func, SamplerCall.of(func))


def _k(name, funcname, aliases, **options):
    return _register(name, "kdiffusion", funcname, aliases, options)


def _t(name, funcname, aliases, **options):
    return _register(name, "timesteps", funcname, aliases, options)


# A1111 1.10.1's order (sd_samplers_kdiffusion.py, sd_samplers_timesteps.py, sd_samplers_lcm.py).
SAMPLERS: list[SamplerInfo] = [
    _k("DPM++ 2M", "sample_dpmpp_2m", ["k_dpmpp_2m"], scheduler="karras"),
    _k("DPM++ SDE", "sample_dpmpp_sde", ["k_dpmpp_sde"], scheduler="karras", second_order=True,
       brownian_noise=True),
    _k("DPM++ 2M SDE", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde"], scheduler="exponential", brownian_noise=True),
    _k("DPM++ 2M SDE Heun", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_heun"], scheduler="exponential",
       brownian_noise=True, solver_type="heun"),
    _k("DPM++ 2S a", "sample_dpmpp_2s_ancestral", ["k_dpmpp_2s_a"], scheduler="karras", uses_ensd=True,
       second_order=True),
    _k("DPM++ 3M SDE", "sample_dpmpp_3m_sde", ["k_dpmpp_3m_sde"], scheduler="exponential",
       discard_next_to_last_sigma=True, brownian_noise=True),
    _k("Euler a", "sample_euler_ancestral", ["k_euler_a", "k_euler_ancestral"], uses_ensd=True),
    _k("Euler", "sample_euler", ["k_euler"]),
    _k("LMS", "sample_lms", ["k_lms"]),
    _k("Heun", "sample_heun", ["k_heun"], second_order=True),
    _k("DPM2", "sample_dpm_2", ["k_dpm_2"], scheduler="karras", discard_next_to_last_sigma=True,
       second_order=True),
    _k("DPM2 a", "sample_dpm_2_ancestral", ["k_dpm_2_a"], scheduler="karras", discard_next_to_last_sigma=True,
       uses_ensd=True, second_order=True),
    _k("DPM fast", "sample_dpm_fast", ["k_dpm_fast"], uses_ensd=True),
    _k("DPM adaptive", "sample_dpm_adaptive", ["k_dpm_ad"], uses_ensd=True),
    _k("Restart", "restart_sampler", ["restart"], scheduler="karras", second_order=True),
    _t("DDIM", "sample_ddim", ["ddim"], uses_ensd=True, default_eta_is_0=True, pairwise_timesteps=True),
    _t("PLMS", "sample_plms", ["plms"]),
    _t("UniPC", "sample_unipc", ["unipc"]),
    _k("LCM", "sample_lcm", ["k_lcm"], denoiser="lcm"),
]

# Pre-1.9 alias suffixes for the schedule baked into the name ("k_dpmpp_2m_ka").
_OLD_ALIAS_SUFFIXES = {"_ka": "Karras", "_exp": "Exponential"}


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def schedule_labels() -> list[str]:
    return [s.label for s in SCHEDULES]


def find_sampler(name: str) -> SamplerInfo | None:
    wanted = name.strip().lower()
    for info in SAMPLERS:
        if wanted == info.name.lower() or wanted in (a.lower() for a in info.aliases):
            return info
    return None


def get_sampler(name: str) -> SamplerInfo:
    """By label or alias, case-insensitively."""
    info = find_sampler(name)
    if info is None:
        raise UnknownSampler(f"unknown sampler {name!r}; choose one of: {', '.join(sampler_names())}")
    return info


def split_sampler_name(name: str, scheduler: str = "Automatic") -> tuple[str, str]:
    """(sampler label, schedule label), accepting old combined names: "DPM++ 2M Karras" → ("DPM++ 2M",
    "Automatic") because Karras is that sampler's default, "DPM++ 2M SDE Karras" → (…, "Karras"), as A1111.
    A schedule given separately wins over one baked into the name unless it is "Automatic"."""
    try:
        schedule = find_schedule(scheduler or "Automatic")
    except ValueError as e:
        raise UnknownSampler(str(e)) from None
    info = find_sampler(name)
    baked = None
    if info is None:
        lowered = name.strip().lower()
        for suffix, label in _OLD_ALIAS_SUFFIXES.items():
            if lowered.endswith(suffix) and (info := find_sampler(lowered[: -len(suffix)])):
                baked = find_schedule(label)
                break
        candidates = sorted(((alias, s) for s in SCHEDULES for alias in (s.label, *s.aliases)),
                            key=lambda pair: -len(pair[0]))
        for alias, sched in candidates if info is None else ():
            if lowered.endswith(" " + alias.lower()) and (info := find_sampler(name.strip()[: -len(alias) - 1])):
                baked = sched
                break
    if info is None:
        raise UnknownSampler(f"unknown sampler {name!r}; choose one of: {', '.join(sampler_names())}")
    if baked is not None and schedule.label == "Automatic":
        schedule = find_schedule("Automatic") if baked.label == info.default_schedule else baked
    return info.name, schedule.label
