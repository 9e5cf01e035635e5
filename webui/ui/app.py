"""The gradio app: a checkpoint bar on top, one tab per job type. Handlers only build typed requests and call
the PipelineManager; nothing here touches a model."""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from ..engine.errors import UserError
from ..engine.manager import PipelineManager
from ..scripts import callbacks
from . import extensions_tab, extras, img2img, lora_browser, png_info, quicksettings, send_to, settings, txt2img
from .common import user_errors_as_gradio
from .serving import MB, launch_options

NO_CHECKPOINT_HELP = (
    "**No checkpoint found.** Put a Stable Diffusion `.safetensors` or `.ckpt` file in `{dir}` and press 🔄, "
    "or create a tiny test model: `webui make-tiny-model {dir}/tiny.safetensors`."
)


def checkpoint_choices(manager: PipelineManager) -> list[tuple[str, str]]:
    """(title, name): A1111's "name [hash]" where the hash is known (hashing happens on first load)."""
    out = []
    for info in manager.list_checkpoints():
        sha = manager.hashes.cached(info.path)
        out.append((f"{info.name} [{sha[:10]}]" if sha else info.name, info.name))
    return out


def model_status(manager: PipelineManager) -> str:
    model = manager.current
    if model is None:
        return "No model loaded yet."
    vae = model.vae_info.name if model.vae_info else "baked-in VAE"
    return f"Active: **{model.title}**, {model.components.arch.name}, {vae}"


def build_checkpoint_bar(manager: PipelineManager, selected: str | None):
    """(the checkpoint dropdown, {setting name: its quicksettings control})."""
    choices = checkpoint_choices(manager)
    with gr.Row(elem_id="quicksettings"):
        dropdown = gr.Dropdown(choices=choices, value=selected or (choices[0][1] if choices else None),
                               label="Stable Diffusion checkpoint", allow_custom_value=False, scale=4)
        refresh = gr.Button("🔄", scale=0, min_width=40)
        quick = quicksettings.build(manager)
        unload = gr.Button("Unload", scale=0, min_width=80)
    status = gr.Markdown(model_status(manager), elem_id="model_status")
    # a job (from any tab, the API, another browser) may load or switch the model: the line follows
    gr.Timer(2.0).tick(lambda: model_status(manager), outputs=status, api_name=False, show_progress="hidden")
    notice = gr.Markdown(NO_CHECKPOINT_HELP.format(dir=manager.ckpt_dir), visible=not choices)

    @user_errors_as_gradio
    def select(name):
        if name:
            manager.select(name)
        return model_status(manager)

    def do_unload():
        manager.unload()
        return model_status(manager)

    listed = [name for name in quick if name in settings.LISTED]  # the VAE files, when the VAE is on the bar

    def do_refresh(current):
        names = checkpoint_choices(manager)
        values = [value for _, value in names]
        value = current if current in values else (values[0] if values else None)
        lists = [settings.shown(name, manager) for name in listed]
        return [gr.update(choices=names, value=value), gr.update(visible=not names), model_status(manager), *lists]

    dropdown.change(select, inputs=dropdown, outputs=status, api_name="load_checkpoint")
    unload.click(do_unload, outputs=status, api_name="unload_checkpoint")
    refresh.click(do_refresh, inputs=dropdown, outputs=[dropdown, notice, status, *(quick[n] for n in listed)],
                  api_name="refresh_checkpoints")
    return dropdown, quick


def build_app(manager: PipelineManager, outdir: Path, checkpoint: str | None = None, scripts=None) -> gr.Blocks:
    """`scripts`: the ScriptSystem (webui/scripts/extensions.py) whose scripts the generation tabs show and
    whose extensions add tabs (on_ui_tabs) and the Extensions tab; None: neither."""
    if scripts is not None:
        callbacks.run("before_ui")
        callbacks.run("ui_settings")  # A1111 extensions declare their options here; ours are Settings fields
    with gr.Blocks(title="Gouache", analytics_enabled=False) as demo:
        ckpt, quick = build_checkpoint_bar(manager, checkpoint)
        with gr.Tabs() as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                results = txt2img.build_tab(manager, Path(outdir), ckpt, scripts)
            with gr.Tab("img2img", id="img2img"):
                img2img_tab = img2img.build(manager, Path(outdir), ckpt, scripts)
            with gr.Tab("Extras", id="extras"):
                extras.build(manager, Path(outdir))
            with gr.Tab("PNG Info", id="pnginfo"):
                png_info.build(tabs, results["paste"], img2img_tab)
            if scripts is not None:
                _extension_tabs()
            with gr.Tab("Settings", id="settings"):
                settings_tab = settings.build_tab(manager)
            if scripts is not None:
                with gr.Tab("Extensions", id="extensions"):
                    extensions_tab.build(manager, scripts)
        send_to.wire(tabs, results, img2img_tab, Path(outdir))
        quicksettings.wire(manager, quick, settings_tab)
    return demo


def _extension_tabs() -> None:
    """Tabs extensions add through on_ui_tabs: each callback returns [(blocks, title, elem_id), …]; a failing
    one is reported in the log and the Extensions tab, the others still show."""
    for result in callbacks.run("ui_tabs"):
        for entry in result or []:
            try:
                blocks, title, elem_id = entry
                with gr.Tab(title, id=elem_id):
                    blocks.render()
            except Exception as e:  # an extension's mistake: that tab is left out
                message = f"an on_ui_tabs tab could not be shown: {type(e).__name__}: {e}"
                logging.getLogger(__name__).error(message)
                callbacks.errors.append(message)


def extension_head(scripts) -> str:
    """Extensions' style.css and javascript/*.js, for the page head."""
    import html

    parts = [f"<style>{scripts.css}</style>"] if scripts.css else []
    for path in scripts.javascript:
        parts.append(f"<script data-extension-file=\"{html.escape(path.name)}\">"
                     f"{path.read_text(encoding='utf-8', errors='replace')}</script>")
    return "\n".join(parts)


def serve_options(demo: gr.Blocks, manager: PipelineManager, outdir: Path) -> dict:
    """Blocks.launch arguments for what the server serves and accepts (serving.py): files from the outputs
    folder, gradio's upload folder and the LoRA previews listed, each staying inside its folder once resolved;
    request bodies up to the `upload_limit_mb` setting."""
    def previews() -> dict[str, Path]:
        return dict.fromkeys(lora_browser.offered_previews(), manager.loras.root)

    def limit() -> int:
        size = int(manager.settings.upload_limit_mb) * MB
        demo.max_file_size = size  # gradio's own per-file check follows a changed setting too
        return size

    return launch_options([Path(outdir)], previews, limit)


def preload(manager: PipelineManager) -> None:
    """Load the checkpoint the dropdown starts on before serving, as A1111 does, so the first Generate is as
    fast as the next; one that cannot be loaded is reported and the UI starts anyway (the job will say why)."""
    try:
        manager.ensure_model(None)
    except UserError as e:
        logging.getLogger(__name__).warning("no checkpoint loaded at start: %s", e)


def launch(manager: PipelineManager, outdir: Path, checkpoint: str | None, host: str, port: int, api=None,
           gradio_auth: list[tuple[str, str]] | None = None, cors: str | None = None, scripts=None):
    """Serve the UI; `api` (webui.api.routes.ApiConfig): A1111's /sdapi/v1 routes on the same server, sharing
    the manager and its job queue; `scripts`: the ScriptSystem (its on_app_started callbacks get the app)."""
    if checkpoint:
        manager.select(checkpoint)
    else:
        preload(manager)
    demo = build_app(manager, outdir, manager.current.info.name if manager.current else None, scripts)
    options = serve_options(demo, manager, outdir)
    if scripts is not None:
        options["head"] = extension_head(scripts)
    if api is not None or cors:
        from ..api.server import DOCS, cors_middleware

        options["app_kwargs"]["middleware"] += cors_middleware(cors)
        if api is not None:
            options["app_kwargs"].update(DOCS)
    app, _, _ = demo.queue().launch(server_name=host, server_port=port, show_error=True, inbrowser=False,
                                    prevent_thread_lock=True, auth=gradio_auth, **options)
    if api is not None:
        from ..api.server import attach

        attach(app, manager, api)
    if scripts is not None:
        callbacks.run("app_started", demo, app)
    demo.block_thread()
