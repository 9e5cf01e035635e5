"""Extras: upscale a finished picture (A1111's postprocessing upscale script). Scale by a factor, or scale to a size
(covering it, then centre-cropped unless told not to); a second upscaler blended in at a visibility. The source's
infotext is carried over, and what was done is recorded as A1111's `postprocessing` text."""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .. import fields
from ..errors import UserError
from ..fields import param
from ..imaging import upscalers
from ..params import SIZE_MAX

log = logging.getLogger(__name__)

SCALE_BY, SCALE_TO = 0, 1
RESIZE_MODES = ("Scale by", "Scale to")
EXTRAS_MAX_SIDE = 8192  # a picture this wide or tall is refused before upscaling (A1111 has no bound)


@dataclass
class ExtrasParams:
    """A1111's extras fields under its API names (/sdapi/v1/extra-single-image)."""
    resize_mode: int = param(SCALE_BY, label="Resize mode", names=RESIZE_MODES)
    upscaling_resize: float = param(2.0, label="Scale by", noun="upscale factor", minimum=1.0, maximum=8.0,
                                    step=0.05)
    upscaling_resize_w: int = param(512, label="Width", noun="upscale width", minimum=64, maximum=2 * SIZE_MAX,
                                    step=8)
    upscaling_resize_h: int = param(512, label="Height", noun="upscale height", minimum=64, maximum=2 * SIZE_MAX,
                                    step=8)
    upscaling_crop: bool = param(True, label="Crop to fit")
    upscaler_1: str = param(upscalers.NONE, label="Upscaler 1")
    upscaler_2: str = param(upscalers.NONE, label="Upscaler 2")
    extras_upscaler_2_visibility: float = param(0.0, label="Upscaler 2 visibility", noun="upscaler 2 visibility",
                                                minimum=0.0, maximum=1.0, step=0.001)

    def validate(self, models=None) -> ExtrasParams:
        """`models`: the user's upscaler model files, whose names are upscalers too."""
        fields.validate(self)
        upscalers.check(self.upscaler_1, models)
        upscalers.check(self.upscaler_2, models)
        return self

    def replace(self, **changes) -> ExtrasParams:
        return dataclasses.replace(self, **changes)


def _one(image: Image.Image, name: str, p: ExtrasParams, info: dict, models=None) -> Image.Image:
    if p.resize_mode == SCALE_TO:
        scale = max(p.upscaling_resize_w / image.width, p.upscaling_resize_h / image.height)
        info["Postprocess upscale to"] = f"{p.upscaling_resize_w}x{p.upscaling_resize_h}"
    else:
        scale = p.upscaling_resize
        info["Postprocess upscale by"] = scale
    out = upscalers.upscale(image, name, scale, models)
    if p.resize_mode == SCALE_TO and p.upscaling_crop:
        cropped = Image.new("RGB", (p.upscaling_resize_w, p.upscaling_resize_h))
        cropped.paste(out, box=(p.upscaling_resize_w // 2 - out.width // 2, p.upscaling_resize_h // 2 - out.height // 2))
        out = cropped
        info["Postprocess crop to"] = f"{out.width}x{out.height}"
    return out


def run(image: Image.Image, p: ExtrasParams, models=None) -> tuple[Image.Image, str]:
    """(the upscaled picture, A1111's postprocessing text, e.g. "Postprocess upscale by: 2, Postprocess upscaler:
    Lanczos"). Upscaler 1 "None" leaves the picture as it is."""
    from ..imaging.open import check_pixels

    p.validate(models)
    check_pixels(image.width, image.height, EXTRAS_MAX_SIDE * EXTRAS_MAX_SIDE, "Extras image")
    image = image.convert("RGB")
    info: dict = {}
    if p.upscaler_1 != upscalers.NONE:
        first = _one(image, p.upscaler_1, p, info, models)
        info["Postprocess upscaler"] = p.upscaler_1
        if p.upscaler_2 != upscalers.NONE and p.extras_upscaler_2_visibility > 0:
            second = _one(image, p.upscaler_2, p, {}, models)
            if second.size != first.size:
                second = second.resize(first.size, resample=upscalers.LANCZOS)
            first = Image.blend(first, second, p.extras_upscaler_2_visibility)
            info["Postprocess upscaler 2"] = p.upscaler_2
        image = first
    text = ", ".join(k if k == v else f"{k}: {_number(v)}" for k, v in info.items() if v is not None)
    return image, text


def _number(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def open_source(path) -> tuple[Image.Image, str | None]:
    """(the picture at path, decoded, its infotext or None); InvalidImage for a file that is no picture or one
    over EXTRAS_MAX_SIDE²."""
    from ..imaging.open import open_limited
    from ..infotext import infotext_of_image

    with open_limited(Path(path), EXTRAS_MAX_SIDE * EXTRAS_MAX_SIDE, f"Picture {Path(path).name}") as image:
        image.load()
        return image.copy(), infotext_of_image(image)


class FolderSources:
    """A1111's Batch from directory: every file of a folder as an extras source, in name order (ignoring case;
    hidden files and subfolders left out, as A1111's listfiles). Each is opened only when the job reaches it,
    so a folder of thousands is never in memory at once; a file that is not a picture is skipped, as A1111
    skips it, and named in `warnings`. A missing or unreadable folder is a UserError at once, before queueing."""

    def __init__(self, folder):
        if folder is None or not str(folder).strip():
            raise UserError("give an input directory: the folder whose pictures to process")
        self.folder = Path(str(folder).strip()).expanduser()
        try:
            with os.scandir(self.folder) as entries:
                names = [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
        except FileNotFoundError:
            raise UserError(f"input directory {self.folder} does not exist") from None
        except NotADirectoryError:
            raise UserError(f"input directory {self.folder} is a file, not a folder") from None
        except OSError as e:
            raise UserError(f"cannot read input directory {self.folder}: {e.strerror or e}") from None
        if not names:
            raise UserError(f"input directory {self.folder} has no files to process")
        self.paths = [self.folder / name for name in sorted(names, key=lambda n: (n.lower(), n))]
        self.warnings: list[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        for path in self.paths:
            try:
                source = open_source(path)
            except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a file that is no picture
                self.warnings.append(f"{path.name} skipped: {e}")
                log.warning("Batch from directory: %s skipped: %s", path, e)
                continue
            yield source
