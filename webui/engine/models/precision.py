"""Which floating-point precision the models run in.

`default_dtype` is what a PipelineManager uses when not told: fp16 on CUDA, fp32 elsewhere (exact, what the
oracle tests compare). `fast_dtype` is what a user gets from the CLI and UI unless they choose (`--precision auto`):
also bf16 on CPUs that compute it in hardware (AVX-512 BF16 or AMX), where it roughly halves a step; elsewhere
torch emulates bf16 on the CPU, slower than fp32, so fp32 stays. bench/precision.py measures what bf16 costs in
pixels on the demo model (the quality gate: mean |Δ| ≤ 2/255 per picture)."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import torch

BF16_FLAGS = re.compile(r"\b(avx512_bf16|amx_bf16)\b")


@functools.cache
def native_bf16() -> bool:
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
