"""The sampler and schedule registry, under A1111's labels: one table for the UI, CLI and infotext parser."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError
from . import kdiffusion


class UnknownSampler(UserError, ValueError):
    pass


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    func: Callable
    aliases: tuple[str, ...] = ()
    # A1111's option flags: "scheduler" (what Automatic means), "uses_ensd", "brownian_noise", …
    options: dict = field(default_factory=dict)


SAMPLERS: list[SamplerInfo] = [
    SamplerInfo("Euler a", kdiffusion.sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"),
                {"uses_ensd": True}),
    SamplerInfo("Euler", kdiffusion.sample_euler, ("k_euler",)),
]

SCHEDULERS = ["Automatic"]


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def get_sampler(name: str) -> SamplerInfo:
    """By label or alias, case-insensitively."""
    wanted = name.strip().lower()
    for info in SAMPLERS:
        if wanted == info.name.lower() or wanted in (a.lower() for a in info.aliases):
            return info
    raise UnknownSampler(f"unknown sampler {name!r}; choose one of: {', '.join(sampler_names())}")


def check_scheduler(name: str) -> str:
    for label in SCHEDULERS:
        if name.strip().lower() == label.lower():
            return label
    raise UnknownSampler(f"unknown schedule type {name!r}; choose one of: {', '.join(SCHEDULERS)}")
