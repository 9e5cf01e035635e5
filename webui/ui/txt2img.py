"""The txt2img tab: A1111's fields and defaults."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..engine import samplers
from ..engine.jobs import hires
from ..engine.manager import PipelineManager
from ..engine.infotext import field_values, format_infotext, infotext_fields, parse_infotext
from ..engine.params import GenerationParams
from ..scripts import callbacks
from ..scripts.jobs import run_job
from . import live, lora_browser, scripts_panel
from .common import follow_native_size, label_of, seed_controls, size_sliders, slider_for, user_errors_as_gradio


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


def build_tab(manager: PipelineManager, outdir: Path, checkpoint: gr.Dropdown, scripts=None) -> dict:
    """Returns what "Send to" needs: {"path", "infotext" (hidden textboxes of the selected result), "img2img",
    "inpaint" (the buttons)}. `scripts`: the ScriptSystem (webui/scripts) whose txt2img scripts the tab shows."""
    # One namespace for the panel builders and the wiring, so each helper takes only what it builds or reads.
    ui = SimpleNamespace(last=gr.State({"infotexts": [], "seeds": [], "paths": []}), scripts=scripts)
    _prompt_panel(ui, manager)
    with gr.Row():
        _settings_panel(ui, manager)
        _output_panel(ui)
    _wire_events(ui, manager, outdir, checkpoint)
    follow_native_size(manager, checkpoint, ui.width, ui.height)
    paste = Paste(ui, manager, checkpoint)
    ui.paste_button.click(paste.from_prompt, inputs=ui.prompt, outputs=paste.outputs, api_name="paste_prompt")
    return {"path": ui.selected_path, "infotext": ui.selected_info, "img2img": ui.send_img2img,
            "inpaint": ui.send_inpaint, "paste": paste}


def _prompt_panel(ui: SimpleNamespace, manager: PipelineManager) -> None:
    """Prompt and negative prompt with their token counters and the LoRA browser; Generate and Interrupt."""
    with gr.Row():
        with gr.Column(scale=3):
            ui.prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt", elem_id="txt2img_prompt")
            ui.prompt_tokens = gr.Markdown("0/75", elem_classes="token-counter")
            ui.negative = gr.Textbox(label="Negative prompt", lines=2, placeholder="Negative prompt")
            ui.negative_tokens = gr.Markdown("0/75", elem_classes="token-counter")
            _styles_row(ui, manager)
            lora_browser.build(manager, ui.prompt)
        with gr.Column(scale=1, min_width=160):
            ui.generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            with gr.Row():
                ui.interrupt = gr.Button("Interrupt")
                ui.skip = gr.Button("Skip")
            # A1111's ↙: the prompt box holds a pasted infotext → every field it names
            ui.paste_button = gr.Button("↙", min_width=40, elem_id="txt2img_paste")


def _settings_panel(ui: SimpleNamespace, manager: PipelineManager) -> None:
    """The sampling settings, seeds and the textual inversion list, in A1111's order."""
    d = GenerationParams()
    with gr.Column():
        with gr.Row():
            ui.sampler = gr.Dropdown(samplers.sampler_names(), value=d.sampler_name, label=label_of("sampler_name"))
            ui.scheduler = gr.Dropdown(samplers.schedule_labels(), value=d.scheduler, label=label_of("scheduler"))
        ui.steps = slider_for("steps")
        with gr.Row():
            ui.width, ui.height = size_sliders(manager)
        with gr.Row():
            ui.n_iter = slider_for("n_iter")
            ui.batch_size = slider_for("batch_size")
        ui.cfg_scale = slider_for("cfg_scale", minimum=1)  # A1111's slider starts at 1; the API accepts 0
        ui.seeds = seed_controls(ui.last)
        _hires_panel(ui, manager)
        # A1111's "Override settings": fields a pasted infotext sets that have no control on this tab
        ui.overrides = gr.Dropdown([], value=[], multiselect=True, label="Override settings", visible=False,
                                   allow_custom_value=True)
        with gr.Accordion("Textual inversion", open=False):
            ui.embeddings = gr.Markdown(embeddings_markdown(manager))
            ui.refresh_embeddings = gr.Button("Refresh embeddings")
        ui.script_inputs = scripts_panel.build(ui.scripts.txt2img if ui.scripts else None, "txt2img")


def _styles_row(ui: SimpleNamespace, manager: PipelineManager) -> None:
    """A1111's styles: a multi-select applied when the job starts, 📋 to write them into the prompts now, and
    saving the current prompts as a style (styles.csv)."""
    with gr.Row():
        ui.styles = gr.Dropdown(manager.styles.names(), value=[], multiselect=True, label="Styles", scale=4,
                                elem_id="txt2img_styles")
        refresh = gr.Button("🔄", scale=0, min_width=40)
        apply = gr.Button("📋", scale=0, min_width=40, elem_id="txt2img_style_apply")
    with gr.Accordion("Edit styles", open=False):
        with gr.Row():
            name = gr.Textbox(label="Style name", scale=3)
            save = gr.Button("Save prompts as style", scale=1)
            delete = gr.Button("Delete style", scale=1)
        message = gr.Markdown()

    def choices(selected=None):
        names = manager.styles.names()
        return gr.update(choices=names, value=[n for n in selected or [] if n in names])

    @user_errors_as_gradio
    def write_into_prompts(prompt, negative, selected):
        prompt, negative, missing = manager.styles.apply(prompt or "", negative or "", list(selected or []))
        return prompt, negative, gr.update(value=[])

    @user_errors_as_gradio
    def save_style(style_name, prompt, negative, selected):
        from ..engine.prompts.styles import Style

        manager.styles.save(Style(style_name or "", prompt or "", negative or ""))
        return choices(selected), f"Saved style **{style_name.strip()}**."

    @user_errors_as_gradio
    def delete_style(style_name, selected):
        manager.styles.delete((style_name or "").strip())
        return choices(selected), f"Deleted style **{style_name.strip()}**."

    refresh.click(choices, inputs=ui.styles, outputs=ui.styles, api_name=False)
    apply.click(write_into_prompts, inputs=[ui.prompt, ui.negative, ui.styles],
                outputs=[ui.prompt, ui.negative, ui.styles], api_name="apply_styles")
    save.click(save_style, inputs=[name, ui.prompt, ui.negative, ui.styles], outputs=[ui.styles, message],
               api_name="save_style")
    delete.click(delete_style, inputs=[name, ui.styles], outputs=[ui.styles, message], api_name="delete_style")


USE_SAME = "Use same sampler"  # A1111's first choice of the hires sampler dropdown
USE_SAME_CHECKPOINT = "Use same checkpoint"  # and of the hires checkpoint dropdown


def _hires_panel(ui: SimpleNamespace, manager: PipelineManager) -> None:
    """A1111's "Hires. fix" accordion: its fields, labels and UI defaults (denoising 0.7)."""
    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires"):
        ui.enable_hr = gr.Checkbox(False, label=label_of("enable_hr"), elem_id="txt2img_enable_hr")
        with gr.Row():
            ui.hr_upscaler = gr.Dropdown(hires.upscaler_names(manager.upscaler_models), value=hires.DEFAULT_UPSCALER,
                                         label=label_of("hr_upscaler"))
            ui.hr_steps = slider_for("hr_second_pass_steps")
            ui.hr_denoise = slider_for("denoising_strength", value=hires.DEFAULT_DENOISE)
        with gr.Row():
            ui.hr_scale = slider_for("hr_scale", elem_id="txt2img_hr_scale")
            ui.hr_resize_x = slider_for("hr_resize_x")
            ui.hr_resize_y = slider_for("hr_resize_y")
        with gr.Row():
            ui.hr_sampler = gr.Dropdown([USE_SAME, *samplers.sampler_names()], value=USE_SAME,
                                        label=label_of("hr_sampler_name"))
            ui.hr_scheduler = gr.Dropdown(samplers.schedule_labels(), value="Automatic",
                                          label=label_of("hr_scheduler"))
        ui.hr_prompt = gr.Textbox("", label=label_of("hr_prompt"), lines=2,
                                  placeholder="Leave empty to use the prompt")
        ui.hr_negative = gr.Textbox("", label=label_of("hr_negative_prompt"), lines=2,
                                    placeholder="Leave empty to use the negative prompt")
        ui.hr_checkpoint = gr.Dropdown([USE_SAME_CHECKPOINT, *(c.name for c in manager.list_checkpoints())],
                                       value=USE_SAME_CHECKPOINT, label=label_of("hr_checkpoint_name"))
    # the checkpoint comes last: the endpoint's older positional callers still line up
    ui.hires_inputs = [ui.enable_hr, ui.hr_upscaler, ui.hr_steps, ui.hr_denoise, ui.hr_scale, ui.hr_resize_x,
                       ui.hr_resize_y, ui.hr_sampler, ui.hr_scheduler, ui.hr_prompt, ui.hr_negative,
                       ui.hr_checkpoint]


def hires_fields(enable_hr=False, hr_upscaler=None, hr_steps=0, denoise=None, hr_scale=2.0, hr_resize_x=0,
                 hr_resize_y=0, hr_sampler=USE_SAME, hr_scheduler="Automatic", hr_prompt="",
                 hr_negative_prompt="", hr_checkpoint=None) -> dict:
    """The accordion's values as request fields; nothing of it when it is off (the first pass's denoise stays
    unset, as A1111's txt2img writes none)."""
    if not enable_hr:
        return {}
    return dict(enable_hr=True, hr_upscaler=hr_upscaler or None, hr_second_pass_steps=int(hr_steps or 0),
                denoising_strength=None if denoise is None else float(denoise), hr_scale=float(hr_scale),
                hr_resize_x=int(hr_resize_x or 0), hr_resize_y=int(hr_resize_y or 0),
                hr_sampler_name=None if hr_sampler in (None, "", USE_SAME) else hr_sampler,
                hr_scheduler=None if hr_scheduler in (None, "", "Automatic") else hr_scheduler,
                hr_prompt=hr_prompt or "", hr_negative_prompt=hr_negative_prompt or "",
                hr_checkpoint_name=None if hr_checkpoint in (None, "", USE_SAME_CHECKPOINT) else hr_checkpoint)


# infotext keys of request fields with no control on the tab: pasted, they become "Override settings" chips
OVERRIDE_KEYS = ("Clip skip", "ENSD", "RNG", "Emphasis", "Eta", "Eta DDIM", "Sigma churn", "Sigma tmin",
                 "Sigma tmax", "Sigma noise", "Schedule min sigma", "Schedule max sigma", "Schedule rho", "VAE",
                "Token merging ratio", "Token merging ratio hr")


def override_chips(p: GenerationParams) -> list[str]:
    """The "Key: value" chips of a parsed infotext's override fields, as its infotext writes them."""
    return [f"{k}: {v}" for k, v in infotext_fields(format_infotext(p)).items() if k in OVERRIDE_KEYS]


def override_fields(chips) -> dict:
    pairs = [chip.split(": ", 1) for chip in chips or [] if ": " in chip]
    return field_values([(k.strip(), v.strip()) for k, v in pairs])


class Paste:
    """An infotext → every txt2img field it names (PNG Info's "Send to txt2img" and the ↙ button): the prompts,
    sampler, schedule, steps, size, CFG, seeds, hires fix, the checkpoint when it is here, and the rest as
    override chips. Unknown keys are left alone (PNG Info shows them)."""

    def __init__(self, ui: SimpleNamespace, manager: PipelineManager, checkpoint: gr.Dropdown):
        self.ui, self.manager = ui, manager
        # scripts' own fields (A1111's Script.infotext_fields): (component, infotext key or fn(pasted) → value)
        self.script_fields = scripts_panel.infotext_fields(ui.scripts.txt2img if ui.scripts else None)
        self.outputs = [checkpoint, ui.prompt, ui.negative, ui.sampler, ui.scheduler, ui.steps, ui.width, ui.height,
                        ui.cfg_scale, ui.seeds.seed, ui.seeds.subseed, ui.seeds.subseed_strength, ui.seeds.resize_w,
                        ui.seeds.resize_h, *ui.hires_inputs, ui.overrides, ui.styles,
                        *(component for component, _ in self.script_fields)]

    def _checkpoint(self, p: GenerationParams):
        for info in self.manager.list_checkpoints():
            sha = self.manager.hashes.cached(info.path)
            if (p.model_hash and sha and sha.startswith(p.model_hash)) or p.model in (info.model_name, info.name):
                return info.name
        return gr.update()  # not here: the current checkpoint stays

    def _hires_checkpoint(self, p: GenerationParams) -> str:
        """A pasted "Hires checkpoint: name [hash]" → that checkpoint when it is here."""
        if not p.hr_checkpoint_name:
            return USE_SAME_CHECKPOINT
        name, _, rest = p.hr_checkpoint_name.partition(" [")
        found = self._checkpoint(p.replace(model=name, model_hash=rest.rstrip("]") or None))
        return found if isinstance(found, str) else USE_SAME_CHECKPOINT

    def values(self, text: str) -> list:
        p = parse_infotext(text or "")
        # extensions see what was pasted (A1111's on_infotext_pasted); their fields stay in p.extra
        pasted = {**p.extra, "Prompt": p.prompt}
        callbacks.run("infotext_pasted", text or "", pasted)
        return self._values(p) + scripts_panel.pasted_values(self.script_fields, pasted)

    def _values(self, p: GenerationParams) -> list:
        chips = override_chips(p)
        # A1111's "Apply if any": styles whose text the prompts end with come back as selected styles
        styles, prompt, negative = self.manager.styles.extract(p.prompt, p.negative_prompt)
        if styles:
            p = p.replace(prompt=prompt, negative_prompt=negative)
        hr_sampler = p.hr_sampler_name or USE_SAME
        return [self._checkpoint(p), p.prompt, p.negative_prompt, p.sampler_name, p.scheduler, p.steps, p.width,
                p.height, p.cfg_scale, p.seed, p.subseed, p.subseed_strength, p.seed_resize_from_w,
                p.seed_resize_from_h, p.enable_hr, p.hr_upscaler or hires.DEFAULT_UPSCALER, p.hr_second_pass_steps,
                hires.DEFAULT_DENOISE if p.denoising_strength is None else p.denoising_strength, p.hr_scale,
                p.hr_resize_x, p.hr_resize_y, hr_sampler, p.hr_scheduler or "Automatic", p.hr_prompt,
                p.hr_negative_prompt, self._hires_checkpoint(p), gr.update(choices=chips, value=chips, visible=bool(chips)),
                gr.update(choices=self.manager.styles.names(), value=styles)]

    def from_prompt(self, text: str):
        """↙: only when the prompt box holds a parameters line; otherwise nothing changes."""
        if not text or "Steps:" not in text:
            return [gr.update()] * len(self.outputs)
        return self.values(text)


def _output_panel(ui: SimpleNamespace) -> None:
    """The gallery, "Send to" buttons, generation info and the selected result."""
    with gr.Column():
        ui.gallery = gr.Gallery(label="Output", format="png", columns=2, object_fit="contain", height="auto",
                                elem_id="txt2img_gallery")
        with gr.Row():
            ui.send_img2img = gr.Button("Send to img2img", size="sm")
            ui.send_inpaint = gr.Button("Send to inpaint", size="sm")
        ui.info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id="txt2img_info")
        # the selected result, for "Send to": hidden, so the API can send any saved result too
        ui.selected_path = gr.Textbox(visible=False)
        ui.selected_info = gr.Textbox(visible=False)


def _txt2img_handler(manager: PipelineManager, outdir: Path, scripts=None):
    """The Generate button's and the `/txt2img` endpoint's function."""
    @user_errors_as_gradio
    def txt2img(checkpoint, prompt, negative_prompt, sampler_name, scheduler, steps, width, height, n_iter,
                batch_size, cfg_scale, seed, subseed=-1, subseed_strength=0.0, seed_resize_from_w=0,
                seed_resize_from_h=0, enable_hr=False, hr_upscaler=None, hr_steps=0, hr_denoise=None, hr_scale=2.0,
                hr_resize_x=0, hr_resize_y=0, hr_sampler=USE_SAME, hr_scheduler="Automatic", hr_prompt="",
                hr_negative_prompt="", hr_checkpoint=None, overrides=None, styles=None, progress=gr.Progress(),
                *script_values):
        request = GenerationParams(
            prompt=prompt, negative_prompt=negative_prompt, sampler_name=sampler_name, scheduler=scheduler,
            steps=int(steps), width=int(width), height=int(height), n_iter=int(n_iter),
            batch_size=int(batch_size), cfg_scale=float(cfg_scale), seed=int(seed), subseed=int(subseed),
            subseed_strength=float(subseed_strength), seed_resize_from_w=int(seed_resize_from_w),
            seed_resize_from_h=int(seed_resize_from_h), model=checkpoint or None, **hires_fields(
                enable_hr, hr_upscaler, hr_steps, hr_denoise, hr_scale, hr_resize_x, hr_resize_y, hr_sampler,
                hr_scheduler, hr_prompt, hr_negative_prompt, hr_checkpoint), **override_fields(overrides),
            styles=list(styles or []))
        args = scripts_panel.script_args(script_values)
        processed = yield from live.run_with_previews(
            lambda task: run_job(scripts, manager, request, outdir, task, args,
                                 on_progress=lambda done, total: progress((done, total), desc="Sampling")),
            manager, (request.width, request.height), lambda preview: ([preview], gr.update(), gr.update()))
        texts = processed.infotexts
        note = "\n\nInterrupted." if processed.interrupted else ""
        note += "".join(f"\n\nWarning: {w}" for w in processed.warnings)
        shown, paths = scripts_panel.result_outputs(processed)
        state = {"infotexts": texts, "seeds": [p.seed for p in processed.params], "paths": paths}
        yield shown, (texts[0] if texts else "") + note, state

    return txt2img


def _wire_events(ui: SimpleNamespace, manager: PipelineManager, outdir: Path, checkpoint: gr.Dropdown) -> None:
    """Token counters, embeddings refresh, Generate (then the first result is selected), Interrupt and the
    gallery selection; the api_names are the endpoints API clients call."""
    def count_tokens(text, steps):
        used, target = manager.token_count(text or "", steps)
        return f"{used}/{target}"

    def reload_embeddings():
        manager.refresh_embeddings()
        return embeddings_markdown(manager)

    for box, counter in ((ui.prompt, ui.prompt_tokens), (ui.negative, ui.negative_tokens)):
        box.change(count_tokens, inputs=[box, ui.steps], outputs=counter, queue=False, show_progress="hidden",
                   api_name="token_count" if box is ui.prompt else False)
    ui.refresh_embeddings.click(reload_embeddings, outputs=ui.embeddings, api_name="refresh_embeddings")

    def show_info(state, evt: gr.SelectData):
        texts, paths = state["infotexts"], state.get("paths", [])
        if not 0 <= evt.index < len(texts):
            return "", "", ""
        return texts[evt.index], paths[evt.index] if evt.index < len(paths) else "", texts[evt.index]

    ui.generate.click(_txt2img_handler(manager, outdir, ui.scripts),
                      inputs=[checkpoint, ui.prompt, ui.negative, ui.sampler, ui.scheduler, ui.steps, ui.width,
                              ui.height, ui.n_iter, ui.batch_size, ui.cfg_scale, ui.seeds.seed, *ui.seeds.inputs,
                              *ui.hires_inputs, ui.overrides, ui.styles, *ui.script_inputs],
                      outputs=[ui.gallery, ui.info, ui.last], api_name="txt2img").then(
        lambda state: (state["paths"][0], state["infotexts"][0]) if state.get("paths") else ("", ""),
        inputs=ui.last, outputs=[ui.selected_path, ui.selected_info], api_name=False)
    ui.interrupt.click(manager.interrupt, api_name="interrupt", queue=False)
    ui.skip.click(manager.skip, api_name="skip", queue=False)
    ui.gallery.select(show_info, inputs=ui.last, outputs=[ui.info, ui.selected_path, ui.selected_info])
