"""Helpers shared by the tabs."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import gradio as gr

from ..engine import params as limits
from ..engine.errors import UserError


def user_errors_as_gradio(fn):
    """Show a UserError as gradio's error message instead of a generic 'Error'. functools.wraps keeps the
    signature visible, which gradio needs to find the inputs and the gr.Progress argument."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e)) from e
    return wrapped


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
    d = limits.GenerationParams()
    with gr.Row():
        seed = gr.Number(value=d.seed, precision=0, label="Seed", scale=4)
        random_seed = gr.Button("🎲", scale=0, min_width=40)
        reuse_seed = gr.Button("♻️", scale=0, min_width=40)
    with gr.Accordion("Extra", open=False):
        with gr.Row():
            subseed = gr.Number(value=d.subseed, precision=0, label="Variation seed", scale=4)
            random_subseed = gr.Button("🎲", scale=0, min_width=40)
            subseed_strength = gr.Slider(0, 1, value=d.subseed_strength, step=0.01, label="Variation strength",
                                         scale=4)
        with gr.Row():
            resize_w = gr.Slider(0, limits.SIZE_MAX, value=0, step=limits.SIZE_STEP, label="Resize seed from width")
            resize_h = gr.Slider(0, limits.SIZE_MAX, value=0, step=limits.SIZE_STEP, label="Resize seed from height")
    random_seed.click(lambda: -1, outputs=seed, queue=False, api_name=False)
    random_subseed.click(lambda: -1, outputs=subseed, queue=False, api_name=False)
    reuse_seed.click(lambda state, current: state["seeds"][0] if state["seeds"] else current,
                     inputs=[last, seed], outputs=seed, queue=False, api_name=False)
    return SeedControls(seed, subseed, subseed_strength, resize_w, resize_h)
