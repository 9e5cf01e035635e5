"""Which floating-point precision the models run in.

`default_dtype` is what a PipelineManager uses when not told: fp16 on CUDA, fp32 elsewhere (exact, what the
oracle tests compare). `fast_dtype` is what a user gets from the CLI and UI unless they choose (`--precision auto`):
also bf16 on CPUs that compute it in hardware (AVX-512 BF16 or AMX); elsewhere torch emulates bf16 on the CPU,
several times slower than fp32, so fp32 stays. bench/precision.py measures what bf16 costs in pixels on the demo
model: mean |Δ| 0.39 grey levels per picture against fp32, the worst 1.2, the judge's score unchanged (the gate:
≤ 2/255). GOUACHE_CPU_BF16=1 or 0 overrides the CPU check (the test suite sets 0: its pixel references are fp32)."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import torch

BF16_FLAGS = re.compile(r"\b(avx512_bf16|amx_bf16)\b")


def native_bf16() -> bool:
    forced = os.environ.get("GOUACHE_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        return bool(BF16_FLAGS.search(Path("/proc/cpuinfo").read_text()))
    except OSError:  # not Linux: no way to tell cheaply, and emulated bf16 would be the slow choice
        return False


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def fast_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cpu" and native_bf16():
        return torch.bfloat16
    return default_dtype(device)
