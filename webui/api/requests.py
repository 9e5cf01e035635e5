"""A1111's `/sdapi/v1/txt2img` and `img2img` request bodies, generated from the GenerationParams declarations, and
their conversion to the one typed request.

Every declared field with `on_api` becomes an optional body field under its API name, defaulting to its API
default (A1111's: steps 50, inpainting fill / "Only masked" / no padding); A1111's own keys that are not request
fields (sampler_index, override_settings, send_images, …) are added here. Unknown keys are accepted and echoed
back, as A1111's pydantic models do: clients send fields of features they assume (restore_faces, tiling)."""
from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..engine.errors import UserError
from ..engine.fields import declared
from ..engine.infotext import parse_infotext
from ..engine.params import GenerationParams
from ..engine.samplers import split_sampler_name

log = logging.getLogger(__name__)

IMG2IMG_GROUP = "img2img"  # the fields an img2img request has and a txt2img one does not (params.py cli_group) …
HIRES_GROUP = "hires"  # … and the other way round
HIRES_ALSO = ("denoising_strength",)  # an img2img field that hires fix uses too
DEFAULT_SAMPLER = "Euler"  # A1111's API: sampler_index's default, used when sampler_name is not sent


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


_COMMON = {
    "sampler_index": (str, Field(DEFAULT_SAMPLER, description="the old name of sampler_name")),
    "script_name": (str | None, None),
    "script_args": (list, Field(default_factory=list)),
    "send_images": (bool, True),
    "save_images": (bool, False),
    "alwayson_scripts": (dict, Field(default_factory=dict)),
    "force_task_id": (str | None, None),
    "infotext": (str | None, Field(None, description="a pasted infotext: fills the fields this request leaves out")),
    "override_settings": (dict | None, None),
    "override_settings_restore_afterwards": (bool, True),
}
_IMG2IMG = {
    "init_images": (list[str] | None, Field(None, description="base64 images (data: URLs accepted)")),
    "mask": (str | None, Field(None, description="base64 inpainting mask: white = regenerate")),
    "include_init_images": (bool, False),
}


def _body_field(d) -> tuple:
    annotation = d.kind | None  # None = the declared default, as A1111's lenient models
    if d.kind is bool:  # A1111 sends inpainting_mask_invert as 0/1
        annotation = bool | int | None
    return annotation, Field(d.api_default, description=d.spec.help or d.spec.label)


def _api_fields(img2img: bool) -> dict:
    out = {}
    for d in declared(GenerationParams):
        group = d.spec.cli_group
        if not d.spec.on_api or (group == IMG2IMG_GROUP and not img2img and d.name not in HIRES_ALSO) or \
                (group == HIRES_GROUP and img2img):
            continue
        out[d.spec.api or d.name] = _body_field(d)
    return out


def body_model(cls, name: str, **more) -> type[BaseModel]:
    """A request body of every declared field of `cls` under its API name, plus `more` (create_model fields)."""
    return create_model(name, __base__=_Body, **{d.spec.api or d.name: _body_field(d) for d in declared(cls)},
                        **more)


def fields_of(body: BaseModel, cls):
    """The typed `cls` from a body made by body_model: null or absent fields take their declared defaults."""
    values = {}
    for d in declared(cls):
        value = getattr(body, d.spec.api or d.name)
        values[d.name] = d.default if value is None else (bool(value) if d.kind is bool else value)
    return cls(**values)


Txt2ImgRequest = create_model("StableDiffusionTxt2ImgProcessingAPI", __base__=_Body,
                              **_api_fields(False), **_COMMON)
Img2ImgRequest = create_model("StableDiffusionImg2ImgProcessingAPI", __base__=_Body,
                              **_api_fields(True), **_COMMON, **_IMG2IMG)
_SAMPLER_FIELDS = ("sampler_name", "scheduler")  # None: sampler_index, then "Euler"; the sampler's own schedule


class NotAvailable(UserError):
    """A feature the request asks for that this version does not have yet (HTTP 501)."""


def to_params(body: BaseModel) -> GenerationParams:
    """The typed request: fields left out (or null) take the API defaults; an `infotext` fills the fields the
    request did not send; sampler_index stands in for a missing sampler_name; old combined sampler names
    ("DPM++ 2M Karras") are split. Raises UnknownSampler (400)."""
    sent = {name for name in body.model_fields_set if getattr(body, name) is not None}
    pasted = parse_infotext(body.infotext) if body.infotext else None
    values = {}
    for d in declared(GenerationParams):
        name = d.spec.api or d.name
        if not d.spec.on_api or name not in type(body).model_fields:
            continue
        value = getattr(body, name)
        if name not in sent and pasted is not None and getattr(pasted, d.name) != d.default:
            value = getattr(pasted, d.name)
        if value is None and not d.nullable and d.name not in _SAMPLER_FIELDS:
            value = d.default if d.api_default is None else d.api_default
        if d.kind is bool and value is not None:
            value = bool(value)
        values[d.name] = value
    for name in ("seed_resize_from_w", "seed_resize_from_h"):  # A1111's API: -1 = off
        if values.get(name) == -1:
            values[name] = 0
    sampler = values.get("sampler_name") or body.sampler_index or DEFAULT_SAMPLER
    values["sampler_name"], values["scheduler"] = split_sampler_name(sampler, values.get("scheduler") or "Automatic")
    if pasted is not None:
        values["extra"] = dict(pasted.extra)
    return GenerationParams(**values)


def echo(body: BaseModel, keep_images: bool = True) -> dict[str, Any]:
    """The request as A1111 returns it in `parameters`; img2img leaves out the images unless include_init_images."""
    out = body.model_dump()
    if not keep_images:
        for name in ("init_images", "mask"):
            if name in out:
                out[name] = None
    return out
