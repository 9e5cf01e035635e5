"""The Settings tab: sampler, LoRA and img2img options A1111 keeps in settings. Applied at once; the next job uses them."""
from __future__ import annotations

import dataclasses

import gradio as gr

from ..engine.models.attention import ATTENTION_MODES
from ..engine.errors import UserError
from ..engine.manager import PipelineManager
from ..engine.prompts.encoder import EMPHASIS_MODES
from ..engine.settings import RNG_SOURCES, Settings

# (field, label, component factory) in A1111's wording.
FIELDS = [
    ("sd_checkpoints_limit", "Maximum number of checkpoints loaded at the same time (kept in RAM)",
     lambda v: gr.Slider(1, 10, value=v, step=1)),
    ("cross_attention_optimization", "Cross attention optimization",
     lambda v: gr.Dropdown(list(ATTENTION_MODES), value=v)),
    ("CLIP_stop_at_last_layers", "Clip skip", lambda v: gr.Slider(1, 12, value=v, step=1)),
    ("emphasis", "Emphasis: (text) makes the model pay more attention, [text] less",
     lambda v: gr.Radio(list(EMPHASIS_MODES), value=v)),
    ("eta_ancestral", "Eta for k-diffusion samplers (noise multiplier; 1 = A1111 default)",
     lambda v: gr.Slider(0, 1, value=v, step=0.01)),
    ("eta_ddim", "Eta for DDIM (0 = deterministic)", lambda v: gr.Slider(0, 1, value=v, step=0.01)),
    ("eta_noise_seed_delta", "Eta noise seed delta (ENSD; NovelAI used 31337)", lambda v: gr.Number(v, precision=0)),
    ("randn_source", "Random number generator source", lambda v: gr.Radio(list(RNG_SOURCES), value=v)),
    ("s_churn", "sigma churn", lambda v: gr.Slider(0, 100, value=v, step=0.01)),
    ("s_tmin", "sigma tmin", lambda v: gr.Slider(0, 10, value=v, step=0.01)),
    ("s_tmax", "sigma tmax (0 = infinity)", lambda v: gr.Slider(0, 999, value=v, step=0.01)),
    ("s_noise", "sigma noise", lambda v: gr.Slider(0, 1.1, value=v, step=0.001)),
    ("sigma_min", "sigma min (0 = the model's)", lambda v: gr.Number(v)),
    ("sigma_max", "sigma max (0 = the model's)", lambda v: gr.Number(v)),
    ("rho", "rho (0 = the schedule's default)", lambda v: gr.Number(v)),
    ("always_discard_next_to_last_sigma", "Always discard next-to-last sigma", lambda v: gr.Checkbox(v)),
    ("beta_dist_alpha", "Beta schedule alpha", lambda v: gr.Slider(0.01, 1, value=v, step=0.01)),
    ("beta_dist_beta", "Beta schedule beta", lambda v: gr.Slider(0.01, 1, value=v, step=0.01)),
    ("lora_in_memory_limit", "Number of LoRA files to keep parsed in memory (per loaded checkpoint)",
     lambda v: gr.Slider(0, 20, value=v, step=1)),
    ("img2img_fix_steps", "With img2img, do exactly the amount of steps the slider specifies",
     lambda v: gr.Checkbox(v)),
    ("initial_noise_multiplier", "Noise multiplier for img2img", lambda v: gr.Slider(0, 1.5, value=v, step=0.001)),
    ("inpainting_mask_weight", "Inpainting conditioning mask strength",
     lambda v: gr.Slider(0, 1, value=v, step=0.01)),
    ("img2img_background_color", "With img2img, fill transparent parts of the input image with this color",
     lambda v: gr.ColorPicker(v)),
    ("upload_limit_mb", "Upload size limit in MB (a bigger request or upload is refused)",
     lambda v: gr.Number(v, precision=0)),
    ("samples_format", "File format for images", lambda v: gr.Radio(["png", "jpg", "webp"], value=v)),
    ("save_txt", "Create a text file with infotext next to every generated image", lambda v: gr.Checkbox(v)),
    ("live_previews_enable", "Show live previews of the created image", lambda v: gr.Checkbox(v)),
    ("show_progress_every_n_steps", "Live preview display period, in sampling steps (0: none while sampling)",
     lambda v: gr.Slider(-1, 100, value=v, step=1)),
    ("queue_limit", "Maximum number of jobs in the queue (UI and API together)",
     lambda v: gr.Number(v, precision=0)),
]


def build_tab(manager: PipelineManager):
    current = manager.settings
    with gr.Column():
        gr.Markdown("### Sampler, LoRA and img2img options")
        widgets = []
        for name, label, make in FIELDS:
            widget = make(getattr(current, name))
            widget.label = label
            widgets.append(widget)
        apply = gr.Button("Apply settings", variant="primary")
        status = gr.Markdown()

    def apply_settings(*values):
        types = {f.name: f.type for f in dataclasses.fields(Settings)}
        changes = {}
        for (name, label, _), value in zip(FIELDS, values):
            kind = types[name]
            try:
                changes[name] = (int(value) if kind == "int" else float(value) if kind == "float"
                                 else bool(value) if kind == "bool" else value)
            except (TypeError, ValueError, OverflowError):
                return f"Not applied: {label} must be a number, got {value!r}"
        try:
            manager.update_settings(**changes)  # a running job keeps its snapshot; a bad value stores nothing
        except UserError as e:
            return f"Not applied: {e}"
        return "Settings applied."

    apply.click(apply_settings, inputs=widgets, outputs=status, api_name="apply_settings")
