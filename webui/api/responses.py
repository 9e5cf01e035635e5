"""A1111's response shapes for generation: base64 PNGs carrying their infotext, and `info`, the JSON string of
A1111's Processed.js()."""
from __future__ import annotations

import base64
import datetime
import json

from ..engine.imaging import metadata
from ..engine.infotext import VERSION
from ..engine.manager import Processed
from ..engine.params import GenerationParams


def b64_image(image, infotext: str | None = None, fmt: str = "png", texts: dict | None = None) -> str:
    """A picture as base64 of its file in `fmt` (the samples_format setting), carrying its infotext."""
    return base64.b64encode(metadata.encode(image, infotext, fmt, texts)).decode("ascii")


def info_json(processed: Processed, request: GenerationParams, started: datetime.datetime) -> str:
    """Processed.js(): the first image's values and every image's seeds, prompts and infotexts. A job
    interrupted before its first image reports the request's values and no seeds."""
    first = processed.params[0] if processed.params else request
    extra = dict(first.extra)
    return json.dumps({
        "prompt": first.prompt, "all_prompts": [p.prompt for p in processed.params],
        "negative_prompt": first.negative_prompt,
        "all_negative_prompts": [p.negative_prompt for p in processed.params],
        "seed": first.seed, "all_seeds": [p.seed for p in processed.params],
        "subseed": first.subseed, "all_subseeds": [p.subseed for p in processed.params],
        "subseed_strength": first.subseed_strength, "width": first.width, "height": first.height,
        "sampler_name": first.sampler_name, "scheduler": first.scheduler, "cfg_scale": first.cfg_scale,
        "steps": first.steps, "batch_size": request.batch_size, "restore_faces": False,
        "face_restoration_model": None, "sd_model_name": first.model, "sd_model_hash": first.model_hash,
        "sd_vae_name": first.vae, "sd_vae_hash": first.vae_hash,
        "seed_resize_from_w": first.seed_resize_from_w or -1, "seed_resize_from_h": first.seed_resize_from_h or -1,
        "denoising_strength": first.denoising_strength, "extra_generation_params": extra,
        # a script's grids come before its pictures (X/Y/Z plot)
        "index_of_first_image": getattr(processed, "index_of_first_image", 0),
        "infotexts": list(processed.infotexts), "styles": [],
        "job_timestamp": started.strftime("%Y%m%d%H%M%S"), "clip_skip": first.clip_skip or 1,
        "is_using_inpainting_conditioning": "Conditional mask weight" in format_keys(first),
        "version": VERSION, "task_id": processed.task_id, "interrupted": processed.interrupted,
        "warnings": list(processed.warnings),
    })


def format_keys(params: GenerationParams) -> set[str]:
    return {"Conditional mask weight"} if params.inpainting_mask_weight is not None else set()
