"""The gradio app: a checkpoint bar on top, one tab per job type. Handlers only build typed requests and call
the PipelineManager; nothing here touches a model."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..engine.manager import PipelineManager
from . import settings, txt2img
from .common import user_errors_as_gradio

NO_CHECKPOINT_HELP = (
    "**No checkpoint found.** Put a Stable Diffusion `.safetensors` or `.ckpt` file in `{dir}` and press 🔄, "
    "or create a tiny test model: `webui make-tiny-model {dir}/tiny.safetensors`."
)


def checkpoint_choices(manager: PipelineManager) -> list[str]:
    return [c.name for c in manager.list_checkpoints()]


def build_checkpoint_bar(manager: PipelineManager, selected: str | None):
    choices = checkpoint_choices(manager)
    with gr.Row():
        dropdown = gr.Dropdown(choices=choices, value=selected or (choices[0] if choices else None),
                               label="Stable Diffusion checkpoint", allow_custom_value=False, scale=4)
        refresh = gr.Button("🔄", scale=0, min_width=40)
    notice = gr.Markdown(NO_CHECKPOINT_HELP.format(dir=manager.ckpt_dir), visible=not choices)

    @user_errors_as_gradio
    def select(name):
        if name:
            manager.load(name)

    def do_refresh(current):
        names = checkpoint_choices(manager)
        value = current if current in names else (names[0] if names else None)
        return gr.update(choices=names, value=value), gr.update(visible=not names)

    dropdown.change(select, inputs=dropdown, api_name="load_checkpoint")
    refresh.click(do_refresh, inputs=dropdown, outputs=[dropdown, notice], api_name="refresh_checkpoints")
    return dropdown


def build_app(manager: PipelineManager, outdir: Path, checkpoint: str | None = None) -> gr.Blocks:
    with gr.Blocks(title="Gouache", analytics_enabled=False) as demo:
        ckpt = build_checkpoint_bar(manager, checkpoint)
        with gr.Tabs():
            with gr.Tab("txt2img", id="txt2img"):
                txt2img.build_tab(manager, Path(outdir), ckpt)
            with gr.Tab("Settings", id="settings"):
                settings.build_tab(manager)
    return demo


def launch(manager: PipelineManager, outdir: Path, checkpoint: str | None, host: str, port: int):
    if checkpoint:
        manager.load(checkpoint)
    demo = build_app(manager, outdir, manager.current.info.name if manager.current else None)
    demo.queue().launch(server_name=host, server_port=port, show_error=True, inbrowser=False,
                        allowed_paths=[str(Path(outdir).resolve())])
