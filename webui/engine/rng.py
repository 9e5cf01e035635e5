"""Per-image noise with A1111's semantics (modules/rng.py), so seeds carry over between the two UIs.

Image i of a job has its own generator seeded with its seed: its initial noise and every later draw (ancestral
steps) come from that generator alone, so a picture does not depend on batch size. SDE samplers get one
Brownian tree per image, seeded the same way."""
from __future__ import annotations

import random
import warnings

import torch

from .params import SEED_MAX


def random_seed() -> int:
    return random.randrange(SEED_MAX)  # A1111: randrange(4294967294)


def job_seeds(params, count: int) -> tuple[list[int], list[int]]:
    """(seeds, subseeds) of every image of a job. With a variation strength, all images share the seed and
    the variation seed counts up instead (A1111's all_seeds / all_subseeds)."""
    seed = random_seed() if params.seed == -1 else params.seed
    subseed = random_seed() if params.subseed == -1 else params.subseed
    vary = params.subseed_strength == 0
    return [seed + (i if vary else 0) for i in range(count)], [subseed + i for i in range(count)]


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two noise tensors (norms taken along dim 1, as A1111 does)."""
    low_dir = low / low.norm(dim=1, keepdim=True)
    high_dir = high / high.norm(dim=1, keepdim=True)
    dot = (low_dir * high_dir).sum(1)
    if dot.mean() > 0.9995:  # nearly parallel: A1111 blends linearly (with the weights this way round)
        return low * t + high * (1 - t)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * low + (torch.sin(t * omega) / so).unsqueeze(1) * high


def _paste_centered(noise: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
    """Noise made at the old size, placed at the centre of the new (cropped where the new one is smaller)."""
    dx = (into.shape[2] - noise.shape[2]) // 2
    dy = (into.shape[1] - noise.shape[1]) // 2
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    into[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
    return into


class ImageRNG:
    """One generator per image. The first draw is the initial noise (with variation seed and "resize seed
    from"); later draws are step noise. With ENSD, step noise comes from generators re-seeded at seed+ENSD."""

    def __init__(self, shape: tuple[int, ...], seeds: list[int], subseeds: list[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from: tuple[int, int] = (0, 0), ensd: int = 0,
                 source: str = "CPU"):
        self.shape = tuple(shape)
        self.seeds = seeds
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.resize_from = seed_resize_from  # (width, height) in pixels
        self.ensd = ensd
        self.device = torch.device("cuda" if source == "GPU" and torch.cuda.is_available() else "cpu")
        self.generators = [self._generator(s) for s in seeds]
        self.is_first = True

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(seed)

    def _randn(self, shape, generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=self.device).cpu()

    def first(self) -> torch.Tensor:
        w, h = self.resize_from
        resized = w > 0 and h > 0
        old_shape = (self.shape[0], h // 8, w // 8) if resized else self.shape
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            # A resized seed draws its old-size noise from a fresh generator; the image's own generator then
            # makes the full-size canvas it is pasted into (and goes on from there).
            noise = self._randn(old_shape, self._generator(seed) if resized else generator)
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[i] if i < len(self.subseeds) else 0
                noise = slerp(self.subseed_strength, noise, self._randn(old_shape, self._generator(subseed)))
            if resized:
                noise = _paste_centered(noise, self._randn(self.shape, generator))
            xs.append(noise)
        if self.ensd:
            self.generators = [self._generator(seed + self.ensd) for seed in self.seeds]
        return torch.stack(xs)

    def next(self) -> torch.Tensor:
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([self._randn(self.shape, g) for g in self.generators])


class BrownianNoiseSampler:
    """k-diffusion's BrownianTreeNoiseSampler with one torchsde tree per image seed (A1111 passes the batch's
    seeds), so SDE samplers are batch-independent too. Returns unit-variance noise for a step."""

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float, seeds: list[int]):
        import torchsde

        t0, t1 = sorted((float(sigma_min), float(sigma_max)))
        self.bounds = (t0, t1)  # samplers' float64 midpoints may round just outside
        w0 = torch.zeros_like(x[0], device="cpu", dtype=torch.float32)
        self.trees = [torchsde.BrownianTree(torch.tensor(t0), w0, torch.tensor(t1), entropy=s) for s in seeds]
        self.device, self.dtype = x.device, x.dtype

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        s0, s1 = float(sigma), float(sigma_next)
        lo, hi, sign = (s0, s1, 1.0) if s0 < s1 else (s1, s0, -1.0)
        lo, hi = max(lo, self.bounds[0]), min(hi, self.bounds[1])
        with warnings.catch_warnings():
            # float32 query times can sit one rounding step outside the tree's span; torchsde warns, harmlessly
            warnings.filterwarnings("ignore", message="Should have t[ab]", category=UserWarning)
            w = torch.stack([tree(torch.tensor(lo), torch.tensor(hi)) for tree in self.trees]) * sign
        return (w / abs(s1 - s0) ** 0.5).to(self.device, self.dtype)
