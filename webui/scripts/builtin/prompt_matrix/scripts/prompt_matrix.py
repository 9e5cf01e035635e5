"""Prompt matrix, as A1111 1.10's scripts/prompt_matrix.py: `base|a|b` makes every combination of the optional
parts (base; base, a; base, b; base, a, b), one picture each, laid out in a grid with the parts as legends."""
from __future__ import annotations

import math

from webui.engine.errors import UserError
from webui.engine.imaging import grid as images
from webui.scripts import processing, script_api as scripts
from webui.scripts.processing import process_images

MAX_PARTS = 8  # 2^(parts-1) pictures: 128 at most


class Script(scripts.Script):
    def title(self):
        return "Prompt matrix"

    def ui(self, is_img2img):
        import gradio as gr

        put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                   elem_id=self.elem_id("put_at_start"))
        different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                      elem_id=self.elem_id("different_seeds"))
        with gr.Row():
            prompt_type = gr.Radio(["positive", "negative"], label="Select prompt", value="positive",
                                   elem_id=self.elem_id("prompt_type"))
            variations_delimiter = gr.Radio(["comma", "space"], label="Select joining char", value="comma",
                                            elem_id=self.elem_id("variations_delimiter"))
        margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p, put_at_start=False, different_seeds=False, prompt_type="positive",
            variations_delimiter="comma", margin_size=0):
        if prompt_type not in ("positive", "negative"):
            raise UserError(f"Prompt matrix: prompt type must be positive or negative, not {prompt_type!r}")
        if variations_delimiter not in ("comma", "space"):
            raise UserError(f"Prompt matrix: joining char must be comma or space, not {variations_delimiter!r}")
        processing.fix_seed(p)
        original = p.prompt if prompt_type == "positive" else p.negative_prompt
        delimiter = ", " if variations_delimiter == "comma" else " "
        parts = original.split("|")
        if len(parts) > MAX_PARTS:
            raise UserError(f"Prompt matrix: {len(parts) - 1} variable parts make {2 ** (len(parts) - 1)} "
                            f"pictures; at most {MAX_PARTS - 1} parts")
        prompts = []
        for combination in range(2 ** (len(parts) - 1)):
            chosen = [text.strip().strip(",") for n, text in enumerate(parts[1:]) if combination & (1 << n)]
            chosen = chosen + [parts[0]] if put_at_start else [parts[0]] + chosen
            prompts.append(delimiter.join(chosen))
        p.n_iter = math.ceil(len(prompts) / p.batch_size)
        p.do_not_save_grid = True
        if prompt_type == "positive":
            p.prompt = prompts
        else:
            p.negative_prompt = prompts
        p.seed = [p.seed + (i if different_seeds else 0) for i in range(len(prompts))]
        processed = process_images(p)
        if not processed.images:
            return processed
        width, height = processed.images[0].size
        grid = images.image_grid(processed.images, rows=1 << ((len(parts) - 1) // 2))
        grid = images.draw_prompt_matrix(grid, width, height, parts, margin_size)
        processed.images.insert(0, grid)
        processed.index_of_first_image = 1
        processed.infotexts.insert(0, processed.infotexts[0])
        if p.outdir is not None:
            processed.paths.insert(0, processing.save_grid(p, grid, processed.infotexts[0]))
        return processed
