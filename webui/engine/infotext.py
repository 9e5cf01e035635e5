"""A1111 1.10 "infotext": the `parameters` text stored in PNGs, written and read as A1111 does.

Layout: prompt, an optional "Negative prompt: ..." part, then one line of `Key: value` fields.
The writer reproduces `processing.create_infotext` byte for byte; the reader reproduces
`infotext_utils.parse_generation_parameters`, minus the settings defaults it fills in.
"""
from __future__ import annotations

import functools
import json
import logging
import re

from .fields import Declared, declared, value_error
from .params import GenerationParams

log = logging.getLogger(__name__)

VERSION = "gouache-0.1.0"

# processing.create_infotext's fixed field order in 1.10.1; p.extra_generation_params follows it.
FIXED_KEYS = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration",
    "Size", "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE",
    "Variation seed", "Variation seed strength", "Seed resize from", "Denoising strength",
    "Conditional mask weight", "Clip skip", "ENSD", "Token merging ratio", "Token merging ratio hr",
    "Init image hash", "RNG", "Tiling",
)
# The typed fields A1111 puts in p.extra_generation_params, in the order it sets them: Img2Img.init's
# inpainting fields or Txt2Img.init's hires fields (a job has one or the other), img2img's noise multiplier,
# then the sampler's (sd_samplers_common / sd_samplers_kdiffusion).
EXTRA_KEYS = (
    "Mask mode", "Mask blur", "Inpaint area", "Masked area padding", "Masked content",
    "Hires checkpoint", "Hires sampler", "Hires prompt", "Hires negative prompt", "Hires schedule type",
    "Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", "Noise multiplier",
    "Emphasis", "Schedule min sigma", "Schedule max sigma", "Schedule rho", "Eta", "Eta DDIM",
    "Sigma churn", "Sigma tmin", "Sigma tmax", "Sigma noise",
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
    if v == key == key.strip():  # A1111 writes a bare key when key == value (read back stripped, so not "k ")
        return key
    # A1111's quote(): JSON-quote values with `,`, `\n` or `:`. We also quote a value starting with
    # `"` or whitespace, which the reader would otherwise json-decode or strip (A1111 reads it fine).
    if any(c in v for c in ",\n:") or v[:1] == '"' or v[:1].isspace():
        v = json.dumps(v, ensure_ascii=False)
    return f"{key}: {v}"


def _declared_fields(p: GenerationParams) -> dict:
    """Infotext values of the fields that declare a one-to-one `infotext` key (params.py); None = not written:
    unset, one of the values A1111 leaves out (`infotext_omit`), or an index outside its `names`."""
    out = {}
    for d in declared(type(p)):
        key, value = d.spec.infotext, getattr(p, d.name)
        if key is None:
            continue
        if value is None or value in d.spec.infotext_omit:
            value = None
        elif d.spec.names is not None:  # an index (a bool is 0 or 1)
            names = d.spec.names
            value = names[value] if isinstance(value, int) and 0 <= value < len(names) else None
        out[key] = value
    return out


def _special_fields(p: GenerationParams) -> dict:
    """The values A1111 writes from more than one field, or only depending on another field."""
    varied = p.subseed_strength != 0
    resized = p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0
    return {
        "Size": f"{p.width}x{p.height}",
        "Variation seed": p.subseed if varied else None,
        "Variation seed strength": p.subseed_strength if varied else None,
        "Seed resize from": f"{p.seed_resize_from_w}x{p.seed_resize_from_h}" if resized else None,
        "Clip skip": p.clip_skip if p.clip_skip and p.clip_skip > 1 else None,  # 1 is the model's own last layer
        "Token merging ratio": p.token_merging_ratio or None,
        "Token merging ratio hr": p.token_merging_ratio_hr if p.enable_hr and p.token_merging_ratio_hr else None,
        "Masked area padding": p.inpaint_full_res_padding if p.inpaint_full_res else None,
        "Hires upscale": p.hr_scale if p.enable_hr and not (p.hr_resize_x or p.hr_resize_y) else None,
        "Hires resize": f"{p.hr_resize_x}x{p.hr_resize_y}" if p.enable_hr and (p.hr_resize_x or p.hr_resize_y)
        else None,
    }


def format_infotext(params: GenerationParams) -> str:
    """One image's infotext, as A1111 1.10.1 writes it."""
    p = params
    typed = {**_declared_fields(p), **_special_fields(p)}
    # Every known key holds its place even when unset, so an unconvertible value kept in `extra` lands there.
    fields = {k: typed.get(k) for k in (*FIXED_KEYS, *EXTRA_KEYS)}
    fields.update((k, v) for k, v in typed.items() if k not in fields)  # fields A1111 lacks: declaration order
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


def _converter(d: Declared):
    """Infotext text → the field's value; raises ValueError/KeyError when it does not convert."""
    names, kind = d.spec.names, d.kind
    if names is not None:
        return (lambda v: bool(names.index(v))) if kind is bool else names.index
    if kind is bool:
        return {"True": True, "False": False}.__getitem__
    return kind if kind in (int, float) else str


@functools.cache
def _readers(cls) -> dict:
    """Infotext key -> (text -> {field: value}) for `cls`; a reader that raises leaves the value in `extra`."""
    readers = {"Size": _size,
               "Seed resize from": lambda v: _size(v, "seed_resize_from_w", "seed_resize_from_h"),
               "Hires upscale": lambda v: {"hr_scale": float(v)},
               "Hires resize": lambda v: _size(v, "hr_resize_x", "hr_resize_y")}
    for d in declared(cls):
        if d.spec.infotext is not None:
            readers[d.spec.infotext] = lambda v, name=d.name, convert=_converter(d): {name: convert(v)}
    return readers


def field_values(pairs, cls: type[GenerationParams] = GenerationParams) -> dict:
    """{field: value} for the (infotext key, text) pairs that read into valid typed fields (A1111's "Override
    settings" chips, e.g. ("Clip skip", "2")); the others are left out."""
    readers, out = _readers(cls), {}
    for key, text in pairs:
        try:
            changes = readers[key](text) if key in readers else None
        except (ValueError, AttributeError, KeyError):
            changes = None
        if changes and not any(value_error(cls, name, value) for name, value in changes.items()):
            out.update(changes)
    return out


def parse_infotext(text: str, cls: type[GenerationParams] = GenerationParams) -> GenerationParams:
    """A1111's reader; never raises: unreadable text becomes the prompt, unreadable fields go to extra.
    `cls`: GenerationParams or a subclass whose extra declared fields are read too."""
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
    p = cls(prompt=prompt, negative_prompt=neg, scheduler="Automatic", rng="GPU")
    readers = _readers(cls)
    # A key given twice: the last occurrence wins, at the first one's place, as A1111's `res[k] = v` builds
    # its dict. Deciding per key before converting anything keeps parse → write → parse stable: an earlier
    # valid value never survives a later unreadable one (which the writer would then write alone).
    for k, v in dict(fields or ()).items():
        try:
            changes = readers[k](v) if k in readers else None
        except (ValueError, AttributeError, KeyError):
            changes = None
        problems = [e for name, value in (changes or {}).items() if (e := value_error(cls, name, value))]
        if problems:  # out of range (a seed of 20 digits, a NaN sigma): kept as text, never reaches a job
            log.warning("infotext field %s: %s; kept as text", k, problems[0])
            changes = None
        if changes is None:
            p.extra[k] = v
        else:
            for name, value in changes.items():
                setattr(p, name, value)
    # A1111's paste: hires fix was on when the denoise is there with any hires size or upscaler. Hires keys
    # without it are kept as text, so writing the parsed infotext gives them back.
    keys = dict(fields or ())
    p.enable_hr = "Denoising strength" in keys and any(k in keys for k in _HIRES_MARKS)
    if not p.enable_hr:
        p.extra.update((k, v) for k, v in keys.items() if k in HIRES_KEYS and k not in p.extra)
        p.extra = {k: p.extra[k] for k in [*keys, *p.extra] if k in p.extra}  # in the text's order
    return p


_HIRES_MARKS = ("Hires upscale", "Hires upscaler", "Hires resize")
HIRES_KEYS = tuple(k for k in EXTRA_KEYS if k.startswith("Hires "))


def infotext_fields(text: str) -> dict:
    """A1111's parse_generation_parameters dict (PNG Info's `parameters` on the API): "Prompt", "Negative
    prompt" and every key as text, "WxH" values also split into "<key>-1" / "<key>-2"."""
    lines = (text or "").strip().split("\n")
    fields = _parse_fields(lines[-1])
    if fields is not None:
        lines.pop()
    parsed = parse_infotext("\n".join(lines))
    out = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt}
    for key, value in dict(fields or ()).items():
        out[key] = value
        size = _RE_SIZE.match(value)
        if size:
            out[f"{key}-1"], out[f"{key}-2"] = size.groups()
    return out


PNG_INFO_MAX_PIXELS = 4096 * 4096  # the img2img init limit: PNG Info reads what img2img would accept


def infotext_of_image(image) -> str | None:
    """An opened picture's infotext (imaging/metadata.py), its PNG chunks after the pixels included: the size is
    checked first, as read_png_infotext does."""
    from .imaging.metadata import infotext_of
    from .imaging.open import check_pixels

    if image.format == "PNG" and "parameters" not in image.info:
        check_pixels(image.width, image.height, PNG_INFO_MAX_PIXELS, "PNG Info image")
    return infotext_of(image)


def read_png_infotext(path) -> str | None:
    """The picture's infotext: a PNG's `parameters` text chunk (tEXt or iTXt), a JPEG's or WebP's EXIF
    UserComment (imaging/metadata.py); None when it has none.

    PNG chunks after the pixel data are only reachable by decoding the pixels, so that is refused (InvalidImage)
    for a picture over PNG_INFO_MAX_PIXELS, from its header: a small file can declare a huge image."""
    from PIL import Image

    with Image.open(path) as im:
        return infotext_of_image(im)
