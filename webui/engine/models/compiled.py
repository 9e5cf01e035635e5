"""Compiled mode (`--compile`): the UNet's and the VAE decoder's forward run through torch.compile.

Each picture size (each input shape) gets its own specialised graph (dynamic=False), compiled on its first use
and kept: a second job of the same size does not compile again, and dynamo's cache limit is raised so a handful
of sizes do not push each other out. The first call of a new shape is timed and logged ("compiled UNet for …
in N s"). Where compiling fails (no C++ compiler for inductor, an unsupported op, a backend not installed) the
module runs eagerly from then on, with one warning: the job itself never fails because of compiled mode. A
failure on a shape that already compiled is the model's own error and is raised as usual."""
from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger(__name__)
CACHE_SIZE_LIMIT = 64  # graphs per compiled function: one per picture size and batch


def _key(args, kwargs) -> tuple:
    def shape(value):
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype, value.device.type)
        if isinstance(value, (list, tuple)):
            return tuple(shape(v) for v in value)
        if isinstance(value, dict):
            return tuple((k, shape(v)) for k, v in sorted(value.items()))
        return None
    return shape(args), shape(kwargs)


class CompiledForward:
    def __init__(self, eager, name: str, backend: str | object = "inductor", mode: str | None = None):
        self.eager, self.name = eager, name
        self.compiled = torch.compile(eager, backend=backend, mode=mode, dynamic=False)
        self.seen: set = set()
        self.failed = False
        self.compile_seconds: dict = {}

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        key = _key(args, kwargs)
        if key in self.seen:
            return self.compiled(*args, **kwargs)
        start = time.perf_counter()
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compile failure: fall back, say so once
            self.failed = True
            root = e
            while getattr(root, "inner_exception", None) or root.__cause__:  # dynamo wraps the backend's error
                root = getattr(root, "inner_exception", None) or root.__cause__
            first = str(root).strip().splitlines()[0][:300] if str(root).strip() else ""
            log.warning("compiled mode: the %s could not be compiled (%s: %s); it runs uncompiled", self.name,
                        type(root).__name__, first)
            return self.eager(*args, **kwargs)
        self.seen.add(key)
        self.compile_seconds[key] = time.perf_counter() - start
        log.info("compiled %s for %s in %.1f s", self.name, key[0][0] if key[0] else key, self.compile_seconds[key])
        return out


def compile_components(components, backend: str | object = "inductor", mode: str | None = None) -> None:
    """Put compiled forwards on the UNet and the VAE decoder of `components` (once)."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, CACHE_SIZE_LIMIT)
    for module, name in ((components.unet, "UNet"), (components.vae.decoder, "VAE decoder")):
        if not isinstance(module.__dict__.get("forward"), CompiledForward):
            module.forward = CompiledForward(module.forward, name, backend, mode)


def is_compiled(module) -> bool:
    return isinstance(module.__dict__.get("forward"), CompiledForward)
