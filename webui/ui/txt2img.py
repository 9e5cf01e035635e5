"""The txt2img tab: A1111's fields and defaults."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..engine import params as limits
from ..engine import samplers
from ..engine.manager import PipelineManager
from ..engine.params import GenerationParams
from . import lora_browser
from .common import seed_controls, user_errors_as_gradio


def embeddings_markdown(manager: PipelineManager) -> str:
    """Loaded embeddings (type the name in a prompt) and the skipped ones with the reason."""
    db = manager.embeddings
    if not db.loaded and not db.skipped:
        return f"No embeddings in `{db.folder}` (loaded with a checkpoint)."
    lines = [f"- **{name}** ({emb.vectors.shape[0]} vectors)" for name, emb in db.loaded.items()]
    lines += [f"- ~~{name}~~ skipped: " + (reason if isinstance(reason, str) else
                                           f"made for width {reason.vectors.shape[-1]}, not this model's")
              for name, reason in db.skipped.items()]
    return "\n".join(lines)


def build_tab(manager: PipelineManager, outdir: Path, checkpoint: gr.Dropdown) -> dict:
    """Returns what "Send to" needs: {"path", "infotext" (hidden textboxes of the selected result), "img2img",
    "inpaint" (the buttons)}."""
    last = gr.State({"infotexts": [], "seeds": [], "paths": []})
    d = GenerationParams()
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt")
            prompt_tokens = gr.Markdown("0/75", elem_classes="token-counter")
            negative = gr.Textbox(label="Negative prompt", lines=2, placeholder="Negative prompt")
            negative_tokens = gr.Markdown("0/75", elem_classes="token-counter")
            lora_browser.build(manager, prompt)
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary")
            interrupt = gr.Button("Interrupt")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                sampler = gr.Dropdown(samplers.sampler_names(), value=d.sampler_name, label="Sampling method")
                scheduler = gr.Dropdown(samplers.schedule_labels(), value=d.scheduler, label="Schedule type")
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
            seeds = seed_controls(last)
            seed = seeds.seed
            with gr.Accordion("Textual inversion", open=False):
                embeddings = gr.Markdown(embeddings_markdown(manager))
                refresh_embeddings = gr.Button("Refresh embeddings")
        with gr.Column():
            gallery = gr.Gallery(label="Output", format="png", columns=2, object_fit="contain", height="auto")
            with gr.Row():
                send_img2img = gr.Button("Send to img2img", size="sm")
                send_inpaint = gr.Button("Send to inpaint", size="sm")
            info = gr.Textbox(label="Generation info", lines=4, interactive=False)
            # the selected result, for "Send to": hidden, so the API can send any saved result too
            selected_path = gr.Textbox(visible=False)
            selected_info = gr.Textbox(visible=False)

    @user_errors_as_gradio
    def txt2img(checkpoint, prompt, negative_prompt, sampler_name, scheduler, steps, width, height, n_iter,
                batch_size, cfg_scale, seed, subseed=-1, subseed_strength=0.0, seed_resize_from_w=0,
                seed_resize_from_h=0, progress=gr.Progress()):
        request = GenerationParams(
            prompt=prompt, negative_prompt=negative_prompt, sampler_name=sampler_name, scheduler=scheduler,
            steps=int(steps), width=int(width), height=int(height), n_iter=int(n_iter),
            batch_size=int(batch_size), cfg_scale=float(cfg_scale), seed=int(seed), subseed=int(subseed),
            subseed_strength=float(subseed_strength), seed_resize_from_w=int(seed_resize_from_w),
            seed_resize_from_h=int(seed_resize_from_h), model=checkpoint or None)
        processed = manager.txt2img(
            request, outdir, on_progress=lambda done, total: progress((done, total), desc="Sampling"))
        texts = processed.infotexts
        note = "\n\nInterrupted." if processed.interrupted else ""
        note += "".join(f"\n\nWarning: {w}" for w in processed.warnings)
        paths = [str(p) for p in processed.paths]
        state = {"infotexts": texts, "seeds": [p.seed for p in processed.params], "paths": paths}
        return paths, (texts[0] if texts else "") + note, state

    def count_tokens(text, steps):
        used, target = manager.token_count(text or "", steps)
        return f"{used}/{target}"

    def reload_embeddings():
        manager.refresh_embeddings()
        return embeddings_markdown(manager)

    for box, counter in ((prompt, prompt_tokens), (negative, negative_tokens)):
        box.change(count_tokens, inputs=[box, steps], outputs=counter, queue=False, show_progress="hidden",
                   api_name="token_count" if box is prompt else False)
    refresh_embeddings.click(reload_embeddings, outputs=embeddings, api_name="refresh_embeddings")

    def show_info(state, evt: gr.SelectData):
        texts, paths = state["infotexts"], state.get("paths", [])
        if not 0 <= evt.index < len(texts):
            return "", "", ""
        return texts[evt.index], paths[evt.index] if evt.index < len(paths) else "", texts[evt.index]

    generate.click(txt2img, inputs=[checkpoint, prompt, negative, sampler, scheduler, steps, width, height, n_iter,
                                    batch_size, cfg_scale, seed, *seeds.inputs],
                   outputs=[gallery, info, last], api_name="txt2img").then(
        lambda state: (state["paths"][0], state["infotexts"][0]) if state.get("paths") else ("", ""),
        inputs=last, outputs=[selected_path, selected_info], api_name=False)
    interrupt.click(manager.interrupt, api_name="interrupt", queue=False)
    gallery.select(show_info, inputs=last, outputs=[info, selected_path, selected_info])
    return {"path": selected_path, "infotext": selected_info, "img2img": send_img2img, "inpaint": send_inpaint}
