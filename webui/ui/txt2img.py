"""The txt2img tab: A1111's fields and defaults."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..engine import params as limits
from ..engine import samplers
from ..engine.manager import PipelineManager
from ..engine.params import GenerationParams
from .common import user_errors_as_gradio


def build_tab(manager: PipelineManager, outdir: Path, checkpoint: gr.Dropdown):
    d = GenerationParams()
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt")
            negative = gr.Textbox(label="Negative prompt", lines=2, placeholder="Negative prompt")
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary")
            interrupt = gr.Button("Interrupt")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                sampler = gr.Dropdown(samplers.sampler_names(), value=d.sampler_name, label="Sampling method")
                scheduler = gr.Dropdown(samplers.SCHEDULERS, value=d.scheduler, label="Schedule type")
            steps = gr.Slider(1, limits.STEPS_MAX, value=d.steps, step=1, label="Sampling steps")
            with gr.Row():
                width = gr.Slider(limits.SIZE_MIN, limits.SIZE_MAX, value=d.width, step=limits.SIZE_STEP,
                                  label="Width")
                height = gr.Slider(limits.SIZE_MIN, limits.SIZE_MAX, value=d.height, step=limits.SIZE_STEP,
                                   label="Height")
            with gr.Row():
                n_iter = gr.Slider(1, limits.BATCH_COUNT_MAX, value=d.n_iter, step=1, label="Batch count")
                batch_size = gr.Slider(1, limits.BATCH_SIZE_MAX, value=d.batch_size, step=1, label="Batch size")
            cfg_scale = gr.Slider(1, limits.CFG_MAX, value=d.cfg_scale, step=0.5, label="CFG Scale")
            seed = gr.Number(value=d.seed, precision=0, label="Seed")
        with gr.Column():
            gallery = gr.Gallery(label="Output", format="png", columns=2, object_fit="contain", height="auto")
            info = gr.Textbox(label="Generation info", lines=4, interactive=False)
            infotexts = gr.State([])

    @user_errors_as_gradio
    def run(ckpt, prompt, negative, sampler, scheduler, steps, width, height, n_iter, batch_size, cfg_scale, seed,
            progress=gr.Progress()):
        request = GenerationParams(
            prompt=prompt, negative_prompt=negative, sampler_name=sampler, scheduler=scheduler, steps=int(steps),
            width=int(width), height=int(height), n_iter=int(n_iter), batch_size=int(batch_size),
            cfg_scale=float(cfg_scale), seed=int(seed), model=ckpt or None)
        processed = manager.txt2img(request, outdir, on_progress=lambda done, total: progress((done, total),
                                                                                            desc="Sampling"))
        texts = processed.infotexts
        note = "\n\nInterrupted." if processed.interrupted else ""
        return [str(p) for p in processed.paths], (texts[0] if texts else "") + note, texts

    def show_info(texts, evt: gr.SelectData):
        return texts[evt.index] if 0 <= evt.index < len(texts) else ""

    generate.click(run, inputs=[checkpoint, prompt, negative, sampler, scheduler, steps, width, height, n_iter,
                                batch_size, cfg_scale, seed],
                   outputs=[gallery, info, infotexts], api_name="txt2img")
    interrupt.click(manager.interrupt, api_name="interrupt", queue=False)
    gallery.select(show_info, inputs=infotexts, outputs=info)
