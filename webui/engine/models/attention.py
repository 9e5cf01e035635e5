"""Cross-attention backends as diffusers attention processors: switchable at any time, no reload.

A1111's setting "Cross attention optimization"; "sliced" stands in for A1111's sub-quadratic/split choices."""
from __future__ import annotations

import torch

ATTENTION_MODES = ("Automatic", "sdp", "sdp-no-mem", "xformers", "sliced", "None")


def xformers_usable() -> bool:
    # xformers installs on CPU machines too but only runs on CUDA (offline-stack.md)
    if not torch.cuda.is_available():
        return False
    try:
        import xformers.ops  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken xformers install means "not usable"
        return False
    return True


def resolve_mode(mode: str) -> str:
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {', '.join(ATTENTION_MODES)}")
    if mode == "Automatic":
        return "xformers" if xformers_usable() else "sdp"
    if mode == "xformers" and not xformers_usable():
        return "sdp"  # asked for but not installed or no CUDA: the next best, not an error
    return mode


class _NoMemEfficientSDPA:
    """PyTorch SDPA without the memory-efficient kernel, which is not deterministic (A1111's sdp-no-mem)."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner = AttnProcessor2_0()

    def __call__(self, *args, **kwargs):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            return self.inner(*args, **kwargs)


def make_processor(mode: str):
    from diffusers.models import attention_processor as ap

    mode = resolve_mode(mode)
    if mode == "sdp":
        return ap.AttnProcessor2_0()
    if mode == "sdp-no-mem":
        return _NoMemEfficientSDPA()
    if mode == "xformers":
        return ap.XFormersAttnProcessor()
    if mode == "sliced":
        return ap.SlicedAttnProcessor(slice_size=1)  # one head at a time: the least memory
    return ap.AttnProcessor()  # "None": plain matmul-softmax-matmul


def apply(mode: str, *modules) -> str:
    """Set the processor on every attention layer of the given modules; returns the mode actually used."""
    for module in modules:
        if module is not None and hasattr(module, "set_attn_processor"):
            module.set_attn_processor(make_processor(mode))
    return resolve_mode(mode)
