"""X/Y/Z plot, as A1111 1.10's scripts/xyz_grid.py behaves: the same axis list in the same order (so an API
client's axis numbers mean the same axes), the same value syntax (webui/scripts/xyz_values.py), costly axes
(checkpoint, VAE) iterated outermost, legends "Label: value", and the grid's infotext with `Script: X/Y/Z plot`,
`X Type`, `X Values`, … Axes for features this project does not have stay in the list, refused by name."""
from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from webui.engine.errors import UserError
from webui.engine.imaging import grid as images
from webui.engine.infotext import format_infotext
from webui.scripts import processing, script_api as scripts, xyz_values
from webui.scripts.processing import Processed, process_images

TITLE = "X/Y/Z plot"


def _field(name):
    def apply(p, x, xs):
        setattr(p, name, x)
    return apply


def _override(name, boolean=False):
    def apply(p, x, xs):
        p.override_settings[name] = (str(x).strip().lower() == "true") if boolean else x
    return apply


def _prompt_sr(p, x, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise UserError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)
    if p.hr_prompt:
        p.hr_prompt = p.hr_prompt.replace(xs[0], x)
    if p.hr_negative_prompt:
        p.hr_negative_prompt = p.hr_negative_prompt.replace(xs[0], x)


def _prompt_order(p, x, xs):
    """The listed tokens put back in the prompt in this permutation's order, the text between them kept."""
    found = sorted((p.prompt.find(token), token) for token in x)
    rest, pieces = p.prompt, []
    for _, token in found:
        at = rest.find(token)
        pieces.append(rest[:at])
        rest = rest[at + len(token):]
    p.prompt = "".join(piece + token for piece, token in zip(pieces, x)) + rest


def _checkpoint(p, x, xs):
    p.override_settings["sd_model_checkpoint"] = x


def _vae(p, x, xs):
    p.override_settings["sd_vae"] = x


def _styles(p, x, xs):
    p.styles = list(p.styles) + [s for s in x.split(",") if s]


def _size(p, x, xs):
    try:
        width, height = (int(v) for v in str(x).lower().split("x"))
    except ValueError:
        raise UserError(f"X/Y/Z plot: size {x!r} is not WIDTHxHEIGHT") from None
    p.width, p.height = width, height


def _unsupported(label):
    def apply(p, x, xs):
        raise UserError(f"X/Y/Z plot: the {label!r} axis is not supported here")
    return apply


def _nothing(p, x, xs):
    pass


def _confirm_samplers(p, xs):
    from webui.engine.samplers import find_sampler

    for x in xs:
        if find_sampler(x) is None:
            raise UserError(f"Unknown sampler: {x}")


def _confirm_checkpoints(p, xs):
    from webui.engine.models.checkpoints import resolve_checkpoint

    for x in xs:
        resolve_checkpoint(x, p.manager.ckpt_dir, p.manager.hashes)  # names the missing one


def _checkpoint_names(p):
    return sorted((c.title for c in p.manager.list_checkpoints()), key=str.casefold) if p and p.manager else []


@dataclass
class AxisOption:
    label: str
    type: type | str  # int, float, str, or "permutations" (Prompt order)
    apply: Callable
    format: str = "label"  # "label": "Label: value"; "value": the value alone; "nothing"; "join"; "path"
    confirm: Callable | None = None
    cost: float = 0.0
    choices: Callable | None = None
    tab: str | None = None  # "txt2img" / "img2img": shown on that tab only

    def label_for(self, value) -> str:
        if self.format == "nothing":
            return ""
        if self.format == "join":
            return ", ".join(value)
        if self.format == "path":
            return Path(str(value)).name
        return xyz_values.format_value(value, self.label if self.format == "label" else None)


def _samplers(p=None):
    from webui.engine.samplers import sampler_names
    return sampler_names()


def _schedules(p=None):
    from webui.engine.samplers import schedule_labels
    return schedule_labels()


def _upscalers(p=None):
    from webui.engine.jobs.hires import upscaler_names
    return upscaler_names()


def _vaes(p):
    return ["Automatic", "None"] + ([v.model_name for v in p.manager.list_vaes()] if p and p.manager else [])


def _styles_list(p):
    return list(p.manager.styles.styles) if p and p.manager else []


def _booleans(p=None):
    return ["False", "True"]


AXIS_OPTIONS = [
    AxisOption("Nothing", str, _nothing, format="nothing"),
    AxisOption("Seed", int, _field("seed")),
    AxisOption("Var. seed", int, _field("subseed")),
    AxisOption("Var. strength", float, _field("subseed_strength")),
    AxisOption("Steps", int, _field("steps")),
    AxisOption("Hires steps", int, _field("hr_second_pass_steps"), tab="txt2img"),
    AxisOption("CFG Scale", float, _field("cfg_scale")),
    AxisOption("Image CFG Scale", float, _unsupported("Image CFG Scale"), tab="img2img"),
    AxisOption("Prompt S/R", str, _prompt_sr, format="value"),
    AxisOption("Prompt order", "permutations", _prompt_order, format="join"),
    AxisOption("Sampler", str, _field("sampler_name"), format="value", confirm=_confirm_samplers,
               choices=_samplers, tab="txt2img"),
    AxisOption("Hires sampler", str, _field("hr_sampler_name"), confirm=_confirm_samplers, choices=_samplers,
               tab="txt2img"),
    AxisOption("Sampler", str, _field("sampler_name"), format="value", confirm=_confirm_samplers,
               choices=_samplers, tab="img2img"),
    AxisOption("Checkpoint name", str, _checkpoint, format="path", confirm=_confirm_checkpoints, cost=1.0,
               choices=_checkpoint_names),
    AxisOption("Negative Guidance minimum sigma", float, _unsupported("Negative Guidance minimum sigma")),
    AxisOption("Sigma Churn", float, _field("s_churn")),
    AxisOption("Sigma min", float, _field("s_tmin")),
    AxisOption("Sigma max", float, _field("s_tmax")),
    AxisOption("Sigma noise", float, _field("s_noise")),
    AxisOption("Schedule type", str, _field("scheduler"), choices=_schedules),
    AxisOption("Schedule min sigma", float, _field("sigma_min")),
    AxisOption("Schedule max sigma", float, _field("sigma_max")),
    AxisOption("Schedule rho", float, _field("rho")),
    AxisOption("Skip Early CFG", float, _unsupported("Skip Early CFG")),
    AxisOption("Beta schedule alpha", float, _override("beta_dist_alpha")),
    AxisOption("Beta schedule beta", float, _override("beta_dist_beta")),
    AxisOption("Eta", float, _field("eta")),
    AxisOption("Clip skip", int, _override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, _field("denoising_strength")),
    AxisOption("Initial noise multiplier", float, _field("initial_noise_multiplier")),
    AxisOption("Extra noise", float, _unsupported("Extra noise")),
    AxisOption("Hires upscaler", str, _field("hr_upscaler"), choices=_upscalers, tab="txt2img"),
    AxisOption("Cond. Image Mask Weight", float, _field("inpainting_mask_weight"), tab="img2img"),
    AxisOption("VAE", str, _vae, cost=0.7, choices=_vaes),
    AxisOption("Styles", str, _styles, choices=_styles_list),
    AxisOption("UniPC Order", int, _unsupported("UniPC Order"), cost=0.5),
    AxisOption("Face restore", str, _unsupported("Face restore"), format="value"),
    AxisOption("Token merging ratio", float, _unsupported("Token merging ratio")),
    AxisOption("Token merging ratio high-res", float, _unsupported("Token merging ratio high-res")),
    AxisOption("Always discard next-to-last sigma", str, _override("always_discard_next_to_last_sigma", True),
               choices=_booleans),
    AxisOption("SGM noise multiplier", str, _unsupported("SGM noise multiplier"), choices=_booleans),
    AxisOption("Refiner checkpoint", str, _unsupported("Refiner checkpoint"), cost=1.0),
    AxisOption("Refiner switch at", float, _unsupported("Refiner switch at")),
    AxisOption("RNG source", str, _field("rng"), choices=lambda p=None: ["GPU", "CPU"]),
    AxisOption("FP8 mode", str, _unsupported("FP8 mode"), cost=0.9),
    AxisOption("Size", str, _size),
]


def axis_options(is_img2img: bool) -> list[AxisOption]:
    tab = "img2img" if is_img2img else "txt2img"
    return [a for a in AXIS_OPTIONS if a.tab in (None, tab)]


def _values(opt: AxisOption, text, dropdown, csv_mode: bool, p) -> list:
    if opt.label == "Nothing":
        return [0]
    if opt.choices is not None and not csv_mode and dropdown:
        items = [str(v) for v in dropdown]
        text = ",".join(f'"{v}"' if "," in v else v for v in items)
    text = "" if text is None else str(text)
    if opt.type is int:
        values = xyz_values.parse_int_values(text)
    elif opt.type is float:
        values = xyz_values.parse_float_values(text)
    elif opt.type == "permutations":
        values = list(itertools.permutations(xyz_values.parse_str_values(text)))
    else:
        values = xyz_values.parse_str_values(text)
    if not values:
        raise UserError(f"X/Y/Z plot: no values for the {opt.label} axis")
    if opt.confirm is not None:
        opt.confirm(p, values)
    return values


def _axis(options: list[AxisOption], chosen) -> AxisOption:
    """The axis an argument names: its index (the UI's and A1111's API's form) or its label."""
    if chosen is None or chosen == "":
        return options[0]
    if isinstance(chosen, str) and not chosen.strip().lstrip("-").isdigit():
        for opt in options:
            if opt.label.lower() == chosen.strip().lower():
                return opt
        raise UserError(f"X/Y/Z plot: unknown axis type {chosen!r}")
    index = int(chosen)
    if not 0 <= index < len(options):
        raise UserError(f"X/Y/Z plot: axis type {index} is out of range (0-{len(options) - 1})")
    return options[index]


class Script(scripts.Script):
    def title(self):
        return TITLE

    def ui(self, is_img2img):
        import gradio as gr

        self.current_axis_options = axis_options(is_img2img)
        labels = [a.label for a in self.current_axis_options]
        controls = []
        for axis, default in (("x", 1), ("y", 0), ("z", 0)):
            with gr.Row():
                kind = gr.Dropdown(label=f"{axis.upper()} type", choices=labels, value=labels[default], type="index",
                                   elem_id=self.elem_id(f"{axis}_type"))
                values = gr.Textbox(label=f"{axis.upper()} values", value="", lines=1,
                                    elem_id=self.elem_id(f"{axis}_values"))
                dropdown = gr.Dropdown(label=f"{axis.upper()} values", visible=False, multiselect=True,
                                       interactive=True, choices=[], value=[])
            kind.change(self._select_axis, inputs=[kind], outputs=[values, dropdown])
            controls += [kind, values, dropdown]
        with gr.Row():
            draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
            no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=self.elem_id("no_fixed_seeds"))
            vary = [gr.Checkbox(label=f"Vary seeds for {a}", value=False, elem_id=self.elem_id(f"vary_seeds_{a.lower()}"))
                    for a in "XYZ"]
        with gr.Row():
            include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                              elem_id=self.elem_id("include_lone_images"))
            include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                            elem_id=self.elem_id("include_sub_grids"))
            csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                   elem_id=self.elem_id("csv_mode"))
        margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                elem_id=self.elem_id("margin_size"))
        self.infotext_fields = [(controls[0], "X Type"), (controls[1], "X Values"), (controls[3], "Y Type"),
                                (controls[4], "Y Values"), (controls[6], "Z Type"), (controls[7], "Z Values")]
        return controls + [draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, *vary, margin_size,
                           csv_mode]

    def _select_axis(self, index):
        import gradio as gr

        opt = self.current_axis_options[index or 0]
        choices = opt.choices(None) if opt.choices is not None else None
        has = bool(choices) and len(choices) <= 12
        return gr.update(visible=not has), gr.update(visible=has, choices=choices or [], value=[])

    def run(self, p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
            z_values_dropdown, draw_legend=True, include_lone_images=False, include_sub_grids=False,
            no_fixed_seeds=False, vary_seeds_x=False, vary_seeds_y=False, vary_seeds_z=False, margin_size=0,
            csv_mode=False):
        options = axis_options(p.is_img2img)
        if not no_fixed_seeds:
            processing.fix_seed(p)
        p.batch_size = 1  # A1111 with return_grid on: one picture per cell
        axes = []
        for kind, text, dropdown in ((x_type, x_values, x_values_dropdown), (y_type, y_values, y_values_dropdown),
                                     (z_type, z_values, z_values_dropdown)):
            opt = _axis(options, kind)
            values = _values(opt, text, dropdown, bool(csv_mode), p)
            if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                values = [random.randrange(4294967294) if v in (None, "", -1) else v for v in values]
            written = ", ".join(str(v) for v in dropdown) if opt.choices is not None and not csv_mode and dropdown \
                else text
            axes.append((opt, values, "" if text is None else str(written)))
        (x_opt, xs, _), (y_opt, ys, _), (z_opt, zs, _) = axes
        cells = len(xs) * len(ys) * len(zs)
        if cells > 1000:
            raise UserError(f"X/Y/Z plot: {cells} cells is too many (at most 1000)")
        order = sorted(range(3), key=lambda i: -axes[i][0].cost)  # costly axes outermost, stable otherwise
        results = [None] * cells
        grid_text = [None] * len(zs)
        vary = (vary_seeds_x, vary_seeds_y, vary_seeds_z)
        for combo in itertools.product(*(range(len(axes[i][1])) for i in order)):
            index = dict(zip(order, combo))
            ix, iy, iz = index[0], index[1], index[2]
            pc = copy.copy(p)
            pc.styles = list(p.styles)
            pc.override_settings = dict(p.override_settings)
            pc.extra_generation_params = dict(p.extra_generation_params)
            for i, (opt, values, _) in enumerate(axes):
                opt.apply(pc, values[index[i]], values)
            if any(v and n for v, n in zip(vary, (ix, iy, iz))):
                pc.seed = p.seed + sum(n for v, n in zip(vary, (ix, iy, iz)) if v)
            processed = process_images(pc)
            if not processed.images:
                results[ix + iy * len(xs) + iz * len(xs) * len(ys)] = None
                continue
            results[ix + iy * len(xs) + iz * len(xs) * len(ys)] = processed
            if grid_text[iz] is None and ix == 0 and iy == 0:
                grid_text[iz] = self._grid_infotext(processed, axes, no_fixed_seeds)
            if processed.interrupted:
                break
        return self._assemble(p, axes, results, grid_text, draw_legend, include_lone_images, include_sub_grids,
                              margin_size)

    @staticmethod
    def _grid_infotext(processed: Processed, axes, no_fixed_seeds) -> str:
        fields = {"Script": TITLE}
        for name, (opt, values, text) in zip("XYZ", axes):
            if opt.label == "Nothing":
                continue
            fields[f"{name} Type"] = opt.label
            fields[f"{name} Values"] = text
            if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                fields[f"Fixed {name} Values"] = ", ".join(str(v) for v in values)
        params = processed.params[0]
        return format_infotext(params.replace(extra={**params.extra, **fields}))

    def _assemble(self, p, axes, results, grid_text, draw_legend, include_lone_images, include_sub_grids,
                  margin_size) -> Processed:
        (x_opt, xs, _), (y_opt, ys, _), (z_opt, zs, _) = axes
        done = [r for r in results if r is not None]
        if not done:
            return Processed(p, [], interrupted=True)
        size = done[0].images[0].size
        cells = [r.images[0] if r is not None else _blank(size) for r in results]
        x_labels = [x_opt.label_for(x) for x in xs]
        y_labels = [y_opt.label_for(y) for y in ys]
        z_labels = [z_opt.label_for(z) for z in zs]
        per_z = len(xs) * len(ys)
        sub_grids = []
        for iz in range(len(zs)):
            grid = images.image_grid(cells[iz * per_z:(iz + 1) * per_z], rows=len(ys))
            if draw_legend:
                grid = images.draw_grid_annotations(grid, size[0], size[1],
                                                    [[images.GridAnnotation(x)] for x in x_labels],
                                                    [[images.GridAnnotation(y)] for y in y_labels], margin_size)
            sub_grids.append(grid)
        texts = [t or done[0].infotexts[0] for t in grid_text]
        if len(zs) > 1:
            z_grid = images.image_grid(sub_grids, rows=1)
            if draw_legend:
                z_grid = images.draw_grid_annotations(z_grid, sub_grids[0].size[0], sub_grids[0].size[1],
                                                      [[images.GridAnnotation(z)] for z in z_labels],
                                                      [[images.GridAnnotation()]])
            grids, grid_texts = [z_grid] + (sub_grids if include_sub_grids else []), \
                [texts[0]] + (texts if include_sub_grids else [])
        else:
            grids, grid_texts = sub_grids, texts
        lone = [r for r in results if r is not None] if include_lone_images else []
        all_images = grids + [r.images[0] for r in lone]
        infotexts = grid_texts + [r.infotexts[0] for r in lone]
        out = Processed(p, all_images, infotexts, seed=done[0].seed,
                        all_seeds=[r.seed for r in done], index_of_first_image=len(grids),
                        interrupted=any(r.interrupted for r in done))
        out.cells = [r.images[0] if r is not None else None for r in results]
        out.cell_infotexts = [r.infotexts[0] if r is not None else None for r in results]
        out.paths = [path for r in done for path in r.paths]
        out.params = [r.params[0] for r in done]
        if not p.do_not_save_grid and p.outdir is not None:
            for g, text in zip(grids, grid_texts):
                out.paths.insert(0, processing.save_grid(p, g, text))
        return out


def _blank(size):
    from PIL import Image
    return Image.new("RGB", size)
