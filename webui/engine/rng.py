"""Per-image noise, A1111 semantics: image i of a job has its own generator seeded with seed+i, so its noise
(initial and per step) does not depend on batch size or on the device the model runs on."""
from __future__ import annotations

import random

import torch

from .params import SEED_MAX


def random_seed() -> int:
    return random.randrange(SEED_MAX)  # A1111: randrange(4294967294)


def job_seeds(seed: int, count: int) -> list[int]:
    """All seeds of a job; -1 draws one at random first."""
    base = random_seed() if seed == -1 else seed
    return [base + i for i in range(count)]


class ImageRNG:
    """One CPU generator per image; each draw returns a batch stacked from one draw per image."""

    def __init__(self, shape: tuple[int, ...], seeds: list[int], device: str = "cpu"):
        self.shape = shape
        self.generators = [torch.Generator(device).manual_seed(s) for s in seeds]
        self.device = device

    def next(self) -> torch.Tensor:
        return torch.stack(
            [torch.randn(self.shape, generator=g, device=self.device) for g in self.generators]
        )
