"""A1111 1.10 "infotext": the `parameters` text stored in PNGs, written and read as A1111 does.

Layout: prompt, an optional "Negative prompt: ..." part, then one line of `Key: value` fields.
The writer reproduces `processing.create_infotext` byte for byte; the reader reproduces
`infotext_utils.parse_generation_parameters`, minus the settings defaults it fills in.
"""
from __future__ import annotations

import json
import re

from .params import MASKED_CONTENT, GenerationParams

VERSION = "gouache-0.1.0"

# processing.create_infotext's fixed field order in 1.10.1; p.extra_generation_params follows it.
FIXED_KEYS = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration",
    "Size", "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE",
    "Variation seed", "Variation seed strength", "Seed resize from", "Denoising strength",
    "Conditional mask weight", "Clip skip", "ENSD", "Token merging ratio", "Token merging ratio hr",
    "Init image hash", "RNG", "Tiling",
)
TAIL_KEYS = ("Version", "User")

# infotext_utils.re_param, verbatim: `Key: value` or `Key: "json string"`, comma-separated.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_BARE_KEY = re.compile(r"\w[\w \-/]*")
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEG_PREFIX = "Negative prompt:"


def _str(v) -> str:
    # The UI writes CFG scale 7.0 as "7" (gradio hands over an int); keep that form.
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _field(key: str, value) -> str:
    v = _str(value)
    if v == key:  # A1111 writes a bare key when key == value
        return key
    # A1111's quote(): JSON-quote values with `,`, `\n` or `:`. We also quote a value starting with
    # `"` or whitespace, which the reader would otherwise json-decode or strip (A1111 reads it fine).
    if any(c in v for c in ",\n:") or v[:1] == '"' or v[:1].isspace():
        v = json.dumps(v, ensure_ascii=False)
    return f"{key}: {v}"


def _typed_fields(p: GenerationParams) -> dict:
    """Infotext values of the typed request fields; None = not written (A1111 writes these only then)."""
    varied = p.subseed_strength != 0
    resized = p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0
    return {
        "Steps": p.steps, "Sampler": p.sampler_name, "Schedule type": p.scheduler, "CFG scale": p.cfg_scale,
        "Seed": p.seed, "Size": f"{p.width}x{p.height}", "Model hash": p.model_hash, "Model": p.model,
        "VAE hash": p.vae_hash, "VAE": p.vae,
        "Variation seed": p.subseed if varied else None,
        "Variation seed strength": p.subseed_strength if varied else None,
        "Seed resize from": f"{p.seed_resize_from_w}x{p.seed_resize_from_h}" if resized else None,
        "ENSD": p.ensd or None,
        "RNG": p.rng if p.rng != "GPU" else None,
        "Clip skip": p.clip_skip if p.clip_skip and p.clip_skip > 1 else None,
        "Denoising strength": p.denoising_strength,
        "Conditional mask weight": p.inpainting_mask_weight,
        # A1111's Img2Img.init sets these in this order (extra_generation_params)
        "Mask mode": "Inpaint not masked" if p.inpainting_mask_invert else None,
        "Mask blur": p.mask_blur or None,
        "Inpaint area": "Only masked" if p.inpaint_full_res else None,
        "Masked area padding": p.inpaint_full_res_padding if p.inpaint_full_res else None,
        "Masked content": MASKED_CONTENT[p.inpainting_fill] if p.inpainting_fill in (0, 2, 3) else None,
        "Noise multiplier": p.initial_noise_multiplier if p.initial_noise_multiplier not in (None, 1.0) else None,
        "Emphasis": p.emphasis,
        # Set by the sampler in A1111's sampler code, hence among extra_generation_params, in this order.
        "Schedule min sigma": p.sigma_min, "Schedule max sigma": p.sigma_max, "Schedule rho": p.rho,
        "Eta": p.eta, "Eta DDIM": p.eta_ddim,
        "Sigma churn": p.s_churn, "Sigma tmin": p.s_tmin, "Sigma tmax": p.s_tmax, "Sigma noise": p.s_noise,
    }


def format_infotext(params: GenerationParams) -> str:
    """One image's infotext, as A1111 1.10.1 writes it."""
    p = params
    typed = _typed_fields(p)
    fields = {k: typed.get(k) for k in FIXED_KEYS}
    fields.update((k, v) for k, v in typed.items() if k not in fields)
    # Like A1111's `**p.extra_generation_params`: a fixed key keeps its place and takes extra's value
    # (so an unconvertible `Steps: abc` read back into extra is written back verbatim); others append.
    fields.update((k, v) for k, v in p.extra.items() if k not in TAIL_KEYS)
    fields["Version"] = p.extra.get("Version", VERSION)
    fields["User"] = p.extra.get("User")
    line = ", ".join(_field(k, v) for k, v in fields.items() if v is not None)
    neg = f"\n{_NEG_PREFIX} {p.negative_prompt}" if p.negative_prompt else ""
    return f"{p.prompt}{neg}\n{line}".strip()


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] == '"':
        try:
            return str(json.loads(v))
        except ValueError:
            pass  # A1111 keeps the raw text
    return v


def _parse_fields(line: str) -> list[tuple[str, str]] | None:
    """The (key, value) pairs of a params line, or None when it is not one (< 3 matches, as A1111)."""
    if line.count(":") < 3:  # each match needs its own ':'; skips the regex on ordinary prompt lines
        return None
    matches = list(_RE_PARAM.finditer(line))
    if len(matches) < 3:
        return None
    fields, pos = [], 0
    for m in [*matches, None]:
        # Text between matches holds the bare keys (key == value) that A1111's findall skips.
        gap = line[pos:m.start() if m else len(line)]
        fields += [(k, k) for k in (s.strip() for s in gap.split(",")) if _RE_BARE_KEY.fullmatch(k)]
        if m:
            fields.append((m[1], _unquote(m[2])))
            pos = m.end()
    return fields


def _size(v: str, w_name: str = "width", h_name: str = "height") -> dict:
    w, h = _RE_SIZE.match(v).groups()  # AttributeError when it is not WxH: stays in extra
    return {w_name: int(w), h_name: int(h)}


# Infotext key -> typed fields; a converter that raises leaves the value in `extra`.
_TYPED = {
    "Steps": lambda v: {"steps": int(v)},
    "Sampler": lambda v: {"sampler_name": v},
    "Schedule type": lambda v: {"scheduler": v},
    "CFG scale": lambda v: {"cfg_scale": float(v)},
    "Seed": lambda v: {"seed": int(v)},
    "Size": _size,
    "Model hash": lambda v: {"model_hash": v},
    "Model": lambda v: {"model": v},
    "VAE hash": lambda v: {"vae_hash": v},
    "VAE": lambda v: {"vae": v},
    "Variation seed": lambda v: {"subseed": int(v)},
    "Variation seed strength": lambda v: {"subseed_strength": float(v)},
    "Seed resize from": lambda v: _size(v, "seed_resize_from_w", "seed_resize_from_h"),
    "ENSD": lambda v: {"ensd": int(v)},
    "RNG": lambda v: {"rng": v},
    "Clip skip": lambda v: {"clip_skip": int(v)},
    "Emphasis": lambda v: {"emphasis": v},
    "Schedule min sigma": lambda v: {"sigma_min": float(v)},
    "Schedule max sigma": lambda v: {"sigma_max": float(v)},
    "Schedule rho": lambda v: {"rho": float(v)},
    "Eta": lambda v: {"eta": float(v)},
    "Eta DDIM": lambda v: {"eta_ddim": float(v)},
    "Sigma churn": lambda v: {"s_churn": float(v)},
    "Sigma tmin": lambda v: {"s_tmin": float(v)},
    "Sigma tmax": lambda v: {"s_tmax": float(v)},
    "Sigma noise": lambda v: {"s_noise": float(v)},
    "Denoising strength": lambda v: {"denoising_strength": float(v)},
    "Conditional mask weight": lambda v: {"inpainting_mask_weight": float(v)},
    "Mask mode": lambda v: {"inpainting_mask_invert": {"Inpaint masked": False, "Inpaint not masked": True}[v]},
    "Mask blur": lambda v: {"mask_blur": int(v)},
    "Inpaint area": lambda v: {"inpaint_full_res": {"Whole picture": False, "Only masked": True}[v]},
    "Masked area padding": lambda v: {"inpaint_full_res_padding": int(v)},
    "Masked content": lambda v: {"inpainting_fill": MASKED_CONTENT.index(v)},
    "Noise multiplier": lambda v: {"initial_noise_multiplier": float(v)},
}


def parse_infotext(text: str) -> GenerationParams:
    """A1111's reader; never raises: unreadable text becomes the prompt, unreadable fields go to extra."""
    lines = (text or "").strip().split("\n")
    fields = _parse_fields(lines[-1])
    if fields is not None:
        lines.pop()
    prompt, neg = "\n".join(lines), ""
    for i, line in enumerate(lines):
        if line.strip().startswith(_NEG_PREFIX):  # A1111 strips each line before this test
            prompt = "\n".join(lines[:i])
            neg = "\n".join([line.strip()[len(_NEG_PREFIX):].strip(), *lines[i + 1:]])
            break
    # A1111's reader defaults: missing Schedule type is "Automatic", missing RNG is "GPU" (only other
    # sources are written).
    p = GenerationParams(prompt=prompt, negative_prompt=neg, scheduler="Automatic", rng="GPU")
    for k, v in fields or ():
        try:
            changes = _TYPED[k](v) if k in _TYPED else None
        except (ValueError, AttributeError, KeyError):
            changes = None
        if changes is None:
            p.extra[k] = v
        else:
            p.extra.pop(k, None)  # a later valid duplicate wins, as in A1111's dict
            for name, value in changes.items():
                setattr(p, name, value)
    return p


def read_png_infotext(path) -> str | None:
    """The PNG's `parameters` text chunk (tEXt or iTXt), or None when it has none."""
    from PIL import Image

    with Image.open(path) as im:
        text = im.info.get("parameters")
        if text is None and hasattr(im, "text"):
            text = im.text.get("parameters")  # chunks after IDAT are only read on load
    return None if text is None else str(text)
