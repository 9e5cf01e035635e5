"""Helpers shared by the tabs."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import gradio as gr

from ..engine.errors import UserError
from ..engine.fields import declared_field
from ..engine.params import GenerationParams


def user_errors_as_gradio(fn):
    """Show a UserError as gradio's error message instead of a generic 'Error'. functools.wraps keeps the
    signature visible, which gradio needs to find the inputs and the gr.Progress argument."""
    if inspect.isgeneratorfunction(fn):  # a handler that yields (live previews): its errors come while iterating
        @functools.wraps(fn)
        def wrapped_generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as e:
                raise gr.Error(str(e)) from e
        return wrapped_generator

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e)) from e
    return wrapped


def slider_for(name: str, params_cls=GenerationParams, **overrides) -> gr.Slider:
    """A gr.Slider for a request field: range, step, label and starting value from its declaration
    (params.py); `overrides` are gr.Slider arguments, for where A1111's slider differs from the bounds."""
    d = declared_field(params_cls, name)
    lo, hi = d.bounds()
    step = d.spec.step or (1 if d.kind is int else 0.01)
    kwargs = dict(minimum=lo, maximum=hi, step=step, value=d.value_default, label=d.spec.label)
    return gr.Slider(**{**kwargs, **overrides})


DEFAULT_SIZE = (GenerationParams().width, GenerationParams().height)


def size_sliders(manager) -> tuple[gr.Slider, gr.Slider]:
    """Width and Height, starting at the size the checkpoint a first job would use was trained at (its
    `modelspec.resolution`), else 512×512: the built-in 64×64 demo model is then fast and on-distribution."""
    width, height = manager.native_size(None) or DEFAULT_SIZE
    return slider_for("width", value=width), slider_for("height", value=height)


def follow_native_size(manager, checkpoint: gr.Dropdown | None, width: gr.Slider, height: gr.Slider) -> None:
    """Choosing a checkpoint that states its training size moves Width/Height there, but only while they are
    at a size nobody chose: 512×512 or another checkpoint's stated size. A size the user set stays."""
    if checkpoint is None:
        return

    def follow(name, w, h):
        stated = {manager.native_size(c.name) for c in manager.list_checkpoints()} - {None}
        if (int(w), int(h)) not in stated | {DEFAULT_SIZE}:
            return gr.update(), gr.update()
        return manager.native_size(name) or DEFAULT_SIZE

    checkpoint.change(follow, inputs=[checkpoint, width, height], outputs=[width, height], show_progress="hidden")


def radio_for(name: str, params_cls=GenerationParams, **overrides) -> gr.Radio:
    """A gr.Radio of a field coded by `names` (Mask mode, Masked content, ...), starting at its default."""
    d = declared_field(params_cls, name)
    kwargs = dict(choices=list(d.spec.names), value=d.spec.names[d.value_default], label=d.spec.label)
    return gr.Radio(**{**kwargs, **overrides})


def label_of(name: str, params_cls=GenerationParams) -> str:
    return declared_field(params_cls, name).spec.label


@dataclass
class SeedControls:
    seed: gr.Number
    subseed: gr.Number
    subseed_strength: gr.Slider
    resize_w: gr.Slider
    resize_h: gr.Slider

    @property
    def inputs(self) -> list:
        """In the order the generate handlers take them after `seed`."""
        return [self.subseed, self.subseed_strength, self.resize_w, self.resize_h]


def seed_controls(last: gr.State) -> SeedControls:
    """A1111's seed row (🎲 random, ♻️ the last job's seed from `last["seeds"]`) and its "Extra" accordion:
    variation seed and strength, resize seed from width/height."""
    d = GenerationParams()
    with gr.Row():
        seed = gr.Number(value=d.seed, precision=0, label=label_of("seed"), scale=4)
        random_seed = gr.Button("🎲", scale=0, min_width=40)
        reuse_seed = gr.Button("♻️", scale=0, min_width=40)
    with gr.Accordion("Extra", open=False):
        with gr.Row():
            subseed = gr.Number(value=d.subseed, precision=0, label=label_of("subseed"), scale=4)
            random_subseed = gr.Button("🎲", scale=0, min_width=40)
            subseed_strength = slider_for("subseed_strength", scale=4)
        with gr.Row():
            resize_w = slider_for("seed_resize_from_w")
            resize_h = slider_for("seed_resize_from_h")
    random_seed.click(lambda: -1, outputs=seed, queue=False, api_name=False)
    random_subseed.click(lambda: -1, outputs=subseed, queue=False, api_name=False)
    reuse_seed.click(lambda state, current: state["seeds"][0] if state["seeds"] else current,
                     inputs=[last, seed], outputs=seed, queue=False, api_name=False)
    return SeedControls(seed, subseed, subseed_strength, resize_w, resize_h)
