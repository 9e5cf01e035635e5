"""The sampler registry under A1111 1.10's labels, aliases and option flags: one table for the UI, the CLI,
the infotext reader and the API."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..errors import UserError
from .schedules import SCHEDULES, find_schedule


class UnknownSampler(UserError, ValueError):
    pass


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    module: str  # "kdiffusion" (sigma-based) or "timesteps" (A1111's DDIM/PLMS/UniPC)
    funcname: str
    aliases: tuple[str, ...] = ()
    # A1111's option flags: scheduler (what "Automatic" means), second_order, brownian_noise, uses_ensd,
    # discard_next_to_last_sigma, solver_type, default_eta_is_0; plus ours: denoiser ("lcm").
    options: dict = field(default_factory=dict)

    @property
    def func(self):
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.funcname)

    @property
    def is_timestep_based(self) -> bool:
        return self.module == "timesteps"

    @property
    def default_schedule(self) -> str | None:
        """The schedule label "Automatic" means for this sampler; None = the model's own discrete schedule."""
        key = self.options.get("scheduler")
        return find_schedule(key).label if key else None


def _k(name, funcname, aliases, **options):
    return SamplerInfo(name, "kdiffusion", funcname, tuple(aliases), options)


def _t(name, funcname, aliases, **options):
    return SamplerInfo(name, "timesteps", funcname, tuple(aliases), options)


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
    _t("DDIM", "sample_ddim", ["ddim"], uses_ensd=True, default_eta_is_0=True),
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
