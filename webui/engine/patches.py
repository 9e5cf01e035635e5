"""Per-job model patches: how scripts, extensions and ControlNet change the model for one job without
monkey-patching it.

Patches are registered on a JobPatches that belongs to one job (ComfyUI's ModelPatcher and Forge's patcher
idea). The manager applies the model-side ones (weights, attention, block outputs) around that job and undoes
them afterwards, even when the job fails; the denoiser-side ones (model wrapper, CFG hooks) live only in that
job's CFG denoiser. Registered in order, patches compose: each attention or model wrapper wraps the ones before
it, each CFG hook sees what the previous one left. So two extensions stack, and the next job sees the model
exactly as loaded.

Example, an extension that sharpens attention for one job (scripts call this from `process`):

    def sharper(call, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        out = call(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
        return out * 1.1

    patches.replace_attention(sharper, kind="cross")
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

ATTENTION_KINDS = ("all", "self", "cross")


@dataclass
class CFGStep:
    """The CFG denoiser's state at one model call, for hooks that read or change it. `x` is the latent batch
    going into the model (before_model), the model's outputs for every prompt part then the negative prompt
    (after_model), or the guided result (after_cfg). `step` counts model calls from 0, as A1111's does."""
    x: torch.Tensor
    sigma: torch.Tensor
    step: int
    total_steps: int
    conds: list  # the prompt's AND parts at this step
    uncond: torch.Tensor
    image_cond: torch.Tensor | None = None  # an inpainting model's extra channels
    denoiser: object = None


@dataclass
class ControlCall:
    """One UNet evaluation as a residual patch (ControlNet) sees it: the scaled latent batch (the prompt's parts'
    rows first, then the negative prompt's `images` rows), the timesteps, the text context and SDXL's extras;
    `step` counts model calls from 0, `total_steps` the sampler's steps."""
    x: torch.Tensor
    t: torch.Tensor
    context: torch.Tensor
    added: dict | None
    parts: int
    images: int
    step: int
    total_steps: int

    @property
    def uncond_rows(self) -> slice:
        return slice(self.parts * self.images, (self.parts + 1) * self.images)


@dataclass
class CFGArgs:
    """What a CFG function replacement gets: the model's predictions split by prompt part, and how A1111 would
    weigh them."""
    cond_outs: list
    uncond_out: torch.Tensor
    weights: list
    cfg_scale: float
    x: torch.Tensor
    sigma: torch.Tensor


def default_cfg(args: CFGArgs) -> torch.Tensor:
    """A1111's combine_denoised: uncond + Σ weight · scale · (part − uncond)."""
    denoised = args.uncond_out.clone()
    for out, weight in zip(args.cond_outs, args.weights):
        denoised += (out - args.uncond_out) * (weight * args.cfg_scale)
    return denoised


@dataclass
class JobPatches:
    weights: list = field(default_factory=list)  # (component, parameter name, delta, strength)
    attention: list = field(default_factory=list)  # (kind, fn(call, attn, hidden_states, ...))
    block_outputs: list = field(default_factory=list)  # (block name or None, fn(name, output) -> output)
    model_wrappers: list = field(default_factory=list)  # fn(apply, x, sigma, context, added, concat) -> out
    cfg_functions: list = field(default_factory=list)  # fn(combine, args: CFGArgs) -> denoised
    before_model: list = field(default_factory=list)  # fn(CFGStep): may replace x, sigma, conds, uncond
    after_model: list = field(default_factory=list)  # fn(CFGStep): may replace x (the model's outputs)
    after_cfg: list = field(default_factory=list)  # fn(CFGStep): may replace x (the guided result)
    unet_residuals: list = field(default_factory=list)  # fn(ControlCall) -> (down, mid[, in-block]) | None
    model_setups: list = field(default_factory=list)  # fn(components): once the job's model is known

    def add_weights(self, name: str, delta: torch.Tensor, strength: float = 1.0, component: str = "unet"):
        """Add strength · delta to a parameter (diffusers' name within `component`: unet, text_encoder,
        text_encoder_2, vae) for this job."""
        self.weights.append((component, name, delta, float(strength)))

    def replace_attention(self, fn: Callable, kind: str = "all"):
        """Wrap the attention layers' processors: fn(call, attn, hidden_states, encoder_hidden_states=None,
        attention_mask=None, **kwargs), where call(...) runs the attention as it was before this patch.
        kind: "self", "cross" or "all" layers."""
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention patch kind must be one of {ATTENTION_KINDS}, not {kind!r}")
        self.attention.append((kind, fn))

    def block_output(self, fn: Callable, block: str | None = None):
        """fn(block name, output) -> output after a UNet block ("down_blocks.0", "mid_block", "up_blocks.3";
        None: every one of them)."""
        self.block_outputs.append((block, fn))

    def wrap_model(self, fn: Callable):
        """fn(apply, x, sigma, context, added, concat) -> prediction around each UNet batch evaluation."""
        self.model_wrappers.append(fn)

    def replace_cfg(self, fn: Callable):
        """fn(combine, args: CFGArgs) -> denoised, where combine(args) is the guidance before this patch."""
        self.cfg_functions.append(fn)

    def add_residuals(self, fn: Callable):
        """fn(ControlCall) -> (down-block residuals, mid-block residual[, in-block features]) or None, added to
        the UNet's skip connections and middle block (ControlNet) and inside its down blocks (T2I-Adapter) for
        every evaluation; any part may be None; several patches are summed."""
        self.unet_residuals.append(fn)

    def on_model(self, fn: Callable):
        """fn(components) when the job's model is loaded, before sampling: a patch that depends on the model
        (a ControlNet sized for its UNet) is built there, and its errors stop the job before it starts."""
        self.model_setups.append(fn)

    def extend(self, other: JobPatches) -> JobPatches:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))
        return self

    @property
    def touches_model(self) -> bool:
        return bool(self.weights or self.attention or self.block_outputs)

    @property
    def touches_denoiser(self) -> bool:
        return bool(self.model_wrappers or self.cfg_functions or self.before_model or self.after_model
                    or self.after_cfg or self.unet_residuals)

    @contextlib.contextmanager
    def applied(self, components):
        """The model-side patches on `components` for the duration of the block, then removed: weights
        restored from a copy, attention processors put back, block hooks unregistered."""
        undo = []
        try:
            for setup in self.model_setups:
                setup(components)
            if self.weights:
                undo.append(_add_weights(components, self.weights))
            if self.attention:
                undo.append(_wrap_attention(components.unet, self.attention))
            if self.block_outputs:
                undo.append(_hook_blocks(components.unet, self.block_outputs))
            yield self
        finally:
            for restore in reversed(undo):
                restore()

    def combine(self) -> Callable[[CFGArgs], torch.Tensor]:
        combine = default_cfg
        for fn in self.cfg_functions:
            combine = _bind(fn, combine)
        return combine

    def wrapped_model(self, apply: Callable) -> Callable:
        for fn in self.model_wrappers:
            apply = _bind(fn, apply)
        return apply


def _bind(fn, inner):
    def call(*args, **kwargs):
        return fn(inner, *args, **kwargs)
    return call


@torch.no_grad()
def _add_weights(components, weights):
    backups = {}
    try:
        for component, name, delta, strength in weights:
            module = getattr(components, component, None)
            if module is None:
                raise ValueError(f"weight patch: this model has no {component}")
            param = module.get_parameter(name)
            if tuple(delta.shape) != tuple(param.shape):
                raise ValueError(f"weight patch for {component}.{name}: shape {tuple(delta.shape)} does not match "
                                 f"the model's {tuple(param.shape)}")
            backups.setdefault((component, name), (param, param.detach().clone()))
            param.add_(delta.to(param.device, param.dtype), alpha=strength)
    except BaseException:
        _restore(backups)
        raise
    return lambda: _restore(backups)


@torch.no_grad()
def _restore(backups):
    for param, original in backups.values():
        param.copy_(original)


class _PatchedProcessor:
    """An attention processor that runs the patches around the processor that was set before them."""

    def __init__(self, inner, fns):
        self.call = inner.__call__
        for fn in fns:
            self.call = _bind(fn, self.call)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return self.call(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)


def _wrap_attention(unet, patches):
    original = unet.attn_processors
    wrapped = {}
    for name, processor in original.items():
        kind = "cross" if ".attn2." in name else "self"
        fns = [fn for k, fn in patches if k in ("all", kind)]
        wrapped[name] = _PatchedProcessor(processor, fns) if fns else processor
    unet.set_attn_processor(wrapped)
    return lambda: unet.set_attn_processor(original)


def _unet_blocks(unet):
    for i, block in enumerate(unet.down_blocks):
        yield f"down_blocks.{i}", block
    yield "mid_block", unet.mid_block
    for i, block in enumerate(unet.up_blocks):
        yield f"up_blocks.{i}", block


def _hook_blocks(unet, patches):
    handles = []
    blocks = dict(_unet_blocks(unet))
    unknown = [b for b, _ in patches if b is not None and b not in blocks]
    if unknown:
        raise ValueError(f"block patch: no UNet block named {unknown[0]!r} (known: {', '.join(blocks)})")
    for name, block in blocks.items():
        for wanted, fn in patches:
            if wanted in (None, name):
                handles.append(block.register_forward_hook(
                    lambda module, inputs, output, name=name, fn=fn: fn(name, output)))

    def remove():
        for handle in handles:
            handle.remove()
    return remove
