"""The Settings tab as A1111 lays it out: a search box, the sections listed on the left and the chosen one's settings
on the right, one "Apply settings" for all. Applied at once; the next job uses them. make_widget is the one place a
setting's control is made: the quicksettings bar (quicksettings.py) makes its controls with it too."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import gradio as gr

from ..engine.models.attention import ATTENTION_MODES
from ..engine.errors import UserError
from ..engine.imaging.previews import PREVIEW_METHODS
from ..engine.manager import PipelineManager
from ..engine.prompts.encoder import EMPHASIS_MODES
from ..engine.settings import RNG_SOURCES, Settings

CHECKPOINT = "sd_model_checkpoint"  # A1111's option; here the checkpoint dropdown on top (app.py), not a setting

# (field, label, component factory) in A1111's wording. A new entry also goes in a SECTIONS section.
FIELDS = [
    ("sd_checkpoints_limit", "Maximum number of checkpoints loaded at the same time (kept in RAM)",
     lambda v: gr.Slider(1, 10, value=v, step=1)),
    ("cross_attention_optimization", "Cross attention optimization",
     lambda v: gr.Dropdown(list(ATTENTION_MODES), value=v)),
    ("token_merging_ratio", "Token merging ratio (0 = off; faster, changes the picture)",
     lambda v: gr.Slider(0, 0.9, value=v, step=0.1)),
    ("token_merging_ratio_img2img", "Token merging ratio for img2img (0 = the ratio above)",
     lambda v: gr.Slider(0, 0.9, value=v, step=0.1)),
    ("token_merging_ratio_hr", "Token merging ratio for high-res pass (0 = the ratio above)",
     lambda v: gr.Slider(0, 0.9, value=v, step=0.1)),
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
    ("show_progress_type", "Live preview method (TAESD: put taesd_decoder.pth / taesdxl_decoder.pth in "
     "models/VAE-approx)", lambda v: gr.Radio(list(PREVIEW_METHODS), value=v)),
    ("show_progress_every_n_steps", "Live preview display period, in sampling steps (0: none while sampling)",
     lambda v: gr.Slider(-1, 100, value=v, step=1)),
    ("queue_limit", "Maximum number of jobs in the queue (UI and API together)",
     lambda v: gr.Number(v, precision=0)),
    ("samples_filename_pattern", "Images filename pattern ([seed], [prompt_spaces], [model_name], …; empty: [seed])",
     lambda v: gr.Textbox(v)),
    ("save_images_add_number", "Add number to filename when saving", lambda v: gr.Checkbox(v)),
    ("save_to_dirs", "Save images to a subdirectory", lambda v: gr.Checkbox(v)),
    ("grid_save", "Always save all generated image grids", lambda v: gr.Checkbox(v)),
    ("n_rows", "Grid row count; use -1 for autodetect and 0 for it to be same as batch size",
     lambda v: gr.Slider(-1, 16, value=v, step=1)),
    ("grid_prevent_empty_spots", "Prevent empty spots in grid (when set to autodetect)", lambda v: gr.Checkbox(v)),
    ("directories_filename_pattern", "Directory name pattern (empty: [prompt_words])", lambda v: gr.Textbox(v)),
    ("control_net_unit_count", "Multi-ControlNet: ControlNet unit number (requires restart)",
     lambda v: gr.Slider(1, 10, value=v, step=1)),
    ("control_net_model_cache_size", "Model cache size (ControlNets kept loaded)",
     lambda v: gr.Slider(1, 10, value=v, step=1)),
    ("control_net_no_detectmap", "Do not append detectmap to output", lambda v: gr.Checkbox(v)),
    ("sd_vae", "SD VAE", lambda v: gr.Dropdown([v], value=v)),  # its files: LISTED
    ("quicksettings_list", "Quicksettings list (settings shown beside the checkpoint; takes effect on restart)",
     lambda v: gr.Dropdown(quicksettings_choices(), value=[n for n in v if n in quicksettings_choices()],
                           multiselect=True)),
]

# A1111 1.10's sections and their order (A1111's names; "System" also holds what only Gouache has).
SECTIONS = [
    ("Saving images/grids", ["samples_format", "samples_filename_pattern", "save_images_add_number", "save_txt",
                             "grid_save", "n_rows", "grid_prevent_empty_spots"]),
    ("Saving to a directory", ["save_to_dirs", "directories_filename_pattern"]),
    ("System", ["upload_limit_mb", "queue_limit"]),
    ("Stable Diffusion", ["sd_checkpoints_limit", "emphasis", "CLIP_stop_at_last_layers", "randn_source"]),
    ("VAE", ["sd_vae"]),
    ("img2img", ["inpainting_mask_weight", "initial_noise_multiplier", "img2img_fix_steps",
                 "img2img_background_color"]),
    ("Optimizations", ["cross_attention_optimization", "token_merging_ratio", "token_merging_ratio_img2img",
                       "token_merging_ratio_hr"]),
    ("Extra Networks", ["lora_in_memory_limit"]),
    ("User interface", ["quicksettings_list"]),
    ("Live previews", ["live_previews_enable", "show_progress_type", "show_progress_every_n_steps"]),
    ("ControlNet", ["control_net_unit_count", "control_net_model_cache_size", "control_net_no_detectmap"]),
    ("Sampler parameters", ["eta_ddim", "eta_ancestral", "s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min",
                            "sigma_max", "rho", "eta_noise_seed_delta", "always_discard_next_to_last_sigma",
                            "beta_dist_alpha", "beta_dist_beta"]),
]


def vae_choices(manager: PipelineManager) -> list[str]:
    return ["Automatic", "None"] + [v.name for v in manager.list_vaes()]


# settings whose choices are files on disk: read when the control is made and again by the bar's 🔄
LISTED = {"sd_vae": vae_choices}


def quicksettings_choices() -> list[str]:
    return [CHECKPOINT] + [name for name, _, _ in FIELDS if name != "quicksettings_list"]


def label_of(name: str) -> str:
    return next(label for n, label, _ in FIELDS if n == name)


def _choices(name: str, manager: PipelineManager, value) -> list[str]:
    listed = LISTED[name](manager)
    return listed if value in listed else listed + [value]  # a file gone since: shown, not a refused Apply


def make_widget(name: str, manager: PipelineManager, **attrs):
    """The control for setting `name` at its stored value, with its label; `attrs` (elem_id, scale, …) are set
    on it."""
    make = next(m for n, _, m in FIELDS if n == name)
    value = getattr(manager.settings, name)
    widget = make(value)
    widget.label = label_of(name)
    if name in LISTED:
        widget.choices = [(c, c) for c in _choices(name, manager, value)]
    for key, attr in attrs.items():
        setattr(widget, key, attr)
    return widget


def shown(name: str, manager: PipelineManager):
    """What puts setting `name`'s control back on the stored value (after a refused change, or a change
    made elsewhere); a file list is re-read."""
    value = getattr(manager.settings, name)
    if name in LISTED:
        return gr.update(value=value, choices=_choices(name, manager, value))
    return value


def coerce(name: str, value):
    """The control's value as setting `name`'s type; a UserError naming the setting when it is not one (a
    cleared number box, a cleared dropdown)."""
    kind = {f.name: str(f.type) for f in dataclasses.fields(Settings)}[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{label_of(name)} must be a number, got {value!r}") from None
    if kind == "bool":
        return bool(value)
    if kind == "list[str]":
        return list(value or [])
    if not isinstance(value, str):
        raise UserError(f"{label_of(name)} must be chosen, got {value!r}")
    return value


def matching(query: str) -> set[str]:
    """The settings whose label contains `query`, ignoring case (A1111's "Search..."); all of them for none."""
    query = (query or "").strip().lower()
    return {name for name, label, _ in FIELDS if query in label.lower()}


def sections() -> list[tuple[str, list[str]]]:
    """SECTIONS, and "Other" for a setting not placed yet: the tab still shows it (the section test fails)."""
    placed = {name for _, names in SECTIONS for name in names}
    other = [name for name, _, _ in FIELDS if name not in placed]
    return SECTIONS + [("Other", other)] if other else SECTIONS


def layout(query: str, section: str) -> tuple[set[str], set[str]]:
    """(the sections shown, the settings shown): while searching, every section with a match and only the
    matches; else the chosen section, whole."""
    if not (query or "").strip():
        return {section}, {name for name, _, _ in FIELDS}
    found = matching(query)
    return {title for title, names in sections() if found.intersection(names)}, found


@dataclass
class SettingsTab:
    widgets: dict  # setting name → its control
    applied: object  # the Apply click's event: what follows a change (the quicksettings bar) chains on it


def build_tab(manager: PipelineManager) -> SettingsTab:
    titles = [title for title, _ in sections()]
    with gr.Row():
        search = gr.Textbox(placeholder="Search...", show_label=False, elem_id="settings_search", scale=4)
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=1)
    status = gr.Markdown(elem_id="settings_result")
    widgets, columns = {}, []
    with gr.Row():
        with gr.Column(scale=1, min_width=180):
            picker = gr.Radio(titles, value=titles[0], show_label=False, elem_id="settings_sections")
        with gr.Column(scale=5):
            for title, names in sections():
                with gr.Column(visible=title == titles[0]) as column:
                    gr.Markdown(f"### {title}")
                    for name in names:
                        widgets[name] = make_widget(name, manager, elem_id=f"setting_{name}")
                columns.append(column)
    ordered = [widgets[name] for name, _, _ in FIELDS]  # the apply_settings API takes them in FIELDS order

    def show(query, section):
        sections, names = layout(query, section)
        return ([gr.update(visible=title in sections) for title in titles]
                + [gr.update(visible=name in names) for name, _, _ in FIELDS])

    gr.on([search.change, picker.change], show, inputs=[search, picker], outputs=columns + ordered,
          api_name=False, show_progress="hidden")

    def apply_settings(*values):
        try:
            changes = {name: coerce(name, value) for (name, _, _), value in zip(FIELDS, values)}
            manager.update_settings(**changes)  # a running job keeps its snapshot; a bad value stores nothing
        except UserError as e:
            return f"Not applied: {e}"
        return "Settings applied."

    applied = apply.click(apply_settings, inputs=ordered, outputs=status, api_name="apply_settings")
    return SettingsTab(widgets, applied)
