"""Prompts from file or textbox, as A1111 1.10's scripts/prompts_from_file.py: one job per line; a line may be
a plain prompt or A1111's options (`--prompt "a cat" --steps 10 --seed 5`). An unknown option or bad value is an
error naming the line (A1111 printed it and drew the raw line instead)."""
from __future__ import annotations

import copy
import random
import shlex

from webui.engine.errors import UserError
from webui.scripts import script_api as scripts
from webui.scripts.processing import Processed, process_images


def _text(value: str) -> str:
    return value


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"{value!r} is not true or false")
    return value.lower() == "true"


def _styles(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


# A1111's prompt_tags; outpath_samples / outpath_grids are left out: a line must not choose where files go
TAGS = {"sd_model": _text, "prompt_for_display": _text, "prompt": _text, "negative_prompt": _text,
        "styles": _styles, "seed": int, "subseed_strength": float, "subseed": int, "seed_resize_from_h": int,
        "seed_resize_from_w": int, "sampler_name": _text, "scheduler": _text, "batch_size": int, "n_iter": int,
        "steps": int, "cfg_scale": float, "width": int, "height": int, "restore_faces": _bool, "tiling": _bool,
        "do_not_save_samples": _bool, "do_not_save_grid": _bool}


def parse_line(line: str) -> dict:
    """A1111's cmdargs: `--tag value` pairs; --prompt / --negative_prompt take every word up to the next --."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise UserError(f"unreadable options ({e})") from None
    out, pos = {}, 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise UserError(f'options must start with "--": {word}')
        if pos + 1 >= len(words):
            raise UserError(f"missing value for {word}")
        tag = word[2:]
        if tag in ("prompt", "negative_prompt"):
            pos += 1
            text = [words[pos]]
            pos += 1
            while pos < len(words) and not words[pos].startswith("--"):
                text.append(words[pos])
                pos += 1
            out[tag] = " ".join(text)
            continue
        if tag not in TAGS:
            raise UserError(f"unknown option: {word}")
        try:
            out[tag] = TAGS[tag](words[pos + 1])
        except ValueError as e:
            raise UserError(f"bad value for {word}: {e}") from None
        pos += 2
    return out


def parse_lines(text: str) -> list[dict]:
    jobs = []
    lines = [line.strip() for line in (text or "").splitlines()]
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        if "--" in line:
            try:
                jobs.append(parse_line(line))
            except UserError as e:
                raise UserError(f"Prompts from file: line {number}: {e}") from None
        else:
            jobs.append({"prompt": line})
    return jobs


class Script(scripts.Script):
    def title(self):
        return "Prompts from file or textbox"

    def ui(self, is_img2img):
        import gradio as gr

        iterate = gr.Checkbox(label="Iterate seed every line", value=False, elem_id=self.elem_id("checkbox_iterate"))
        same_seed = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                elem_id=self.elem_id("checkbox_iterate_batch"))
        position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start",
                            elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", value="", lines=1, elem_id=self.elem_id("prompt_txt"))
        upload = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))
        upload.change(lambda data: (data or b"").decode("utf8", errors="ignore"), inputs=upload,
                      outputs=prompt_txt, api_name=False)
        return [iterate, same_seed, position, prompt_txt]

    def run(self, p, checkbox_iterate=False, checkbox_iterate_batch=False, prompt_position="start", prompt_txt=""):
        if prompt_position not in ("start", "end"):
            raise UserError(f"Prompts from file: insert position must be start or end, not {prompt_position!r}")
        jobs = parse_lines(prompt_txt)
        if not jobs:
            raise UserError("Prompts from file: the list of prompts is empty")
        p.do_not_save_grid = True
        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = int(random.randrange(4294967294))
        images, prompts, infotexts, seeds, paths, params = [], [], [], [], [], []
        interrupted = False
        for args in jobs:
            job = copy.copy(p)
            job.override_settings = dict(p.override_settings)
            job.extra_generation_params = dict(p.extra_generation_params)
            for key, value in args.items():
                if key == "sd_model":
                    job.override_settings["sd_model_checkpoint"] = value
                elif key not in ("prompt_for_display", "restore_faces", "tiling"):
                    setattr(job, key, value)
            for key in ("prompt", "negative_prompt"):
                if args.get(key) and getattr(p, key):
                    mine, base = args[key], getattr(p, key)
                    setattr(job, key, f"{mine} {base}" if prompt_position == "start" else f"{base} {mine}")
            done = process_images(job)
            images += done.images
            prompts += done.all_prompts
            infotexts += done.infotexts
            seeds += done.all_seeds
            paths += done.paths
            params += done.params
            if checkbox_iterate:
                p.seed = p.seed + p.batch_size * p.n_iter
            if done.interrupted:
                interrupted = True
                break
        result = Processed(p, images, infotexts, seed=seeds[0] if seeds else p.seed, all_prompts=prompts,
                           all_seeds=seeds, paths=paths, interrupted=interrupted)
        result.params = params
        return result
