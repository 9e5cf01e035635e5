"""Preprocessors that need annotator weights: run only from files the user put in `models/ControlNet-annotators`
(never downloaded), listed only when their file is there; otherwise named as unavailable with the file to put
where. The extension's own file names are kept, so an A1111 user's `extensions/sd-webui-controlnet/annotator/
downloads` files can be copied in as they are.

One network family per module here (hed, lineart, lineart_anime, pidinet, mlsd); each has `TITLE`,
`network(state)` (the torch module with the file's weights in it) and `detect(net, pixels, module, a, b)` (the
uint8 H×W map). This module is the registry: which preprocessor needs which file, their threshold defaults,
finding the files, loading them (one network in memory at a time) and running them."""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError

SOURCE = "lllyasviel/Annotators on Hugging Face"


@dataclass(frozen=True)
class Annotator:
    file: str  # in models/ControlNet-annotators (any depth)
    family: str = "hed"  # the module of this package that runs it
    defaults: tuple = (None, None)  # threshold A, threshold B
    source: str = SOURCE


ANNOTATORS = {
    "softedge_hed": Annotator("ControlNetHED.pth", "hed"),
    "softedge_hedsafe": Annotator("ControlNetHED.pth", "hed"),
    "softedge_pidinet": Annotator("table5_pidinet.pth", "pidinet"),
    "softedge_pidisafe": Annotator("table5_pidinet.pth", "pidinet"),
    "lineart_realistic": Annotator("sk_model.pth", "lineart"),
    "lineart_coarse": Annotator("sk_model2.pth", "lineart"),
    "lineart_anime": Annotator("netG.pth", "lineart_anime"),
    "mlsd": Annotator("mlsd_large_512_fp32.pth", "mlsd", (0.1, 0.1)),  # value threshold, distance threshold
}
DEFAULTS = {module: a.defaults for module, a in ANNOTATORS.items()}

_lock = threading.Lock()
_loaded: dict = {}


def find_file(module: str, folder: Path | None) -> Path | None:
    if folder is None or not Path(folder).is_dir():
        return None
    name = ANNOTATORS[module].file
    return next(iter(sorted(Path(folder).rglob(name))), None)


def available(folder: Path | None) -> list[str]:
    return [module for module in ANNOTATORS if find_file(module, folder) is not None]


def missing(folder: Path | None) -> dict[str, str]:
    """{module: what to do} for the annotators whose file is not there."""
    return {module: f"put {a.file} (from {a.source}) in {folder or 'models/ControlNet-annotators'}"
            for module, a in ANNOTATORS.items() if find_file(module, folder) is None}


def load(module: str, path: Path):
    """The network in `path` for `module` (cached while the file is unchanged); a file that is not that network's
    is a UserError naming it and why."""
    import torch

    family = importlib.import_module(f"{__name__}.{ANNOTATORS[module].family}")
    key = (path, path.stat().st_mtime_ns, family.__name__)
    with _lock:
        if key not in _loaded:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                net = family.network(state)
            except Exception as e:  # noqa: BLE001 - a wrong or broken file is the user's to replace
                raise UserError(f"cannot use {path.name} as the {family.TITLE} annotator: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
            _loaded.clear()  # one annotator in memory at a time
            _loaded[key] = net.float().eval().requires_grad_(False)
        return family, _loaded[key]


def run(module: str, pixels: np.ndarray, folder: Path | None, a: float | None = None,
        b: float | None = None) -> np.ndarray:
    """The map (uint8, H×W) of an RGB uint8 picture already at the processor resolution, with thresholds as
    preprocess.thresholds resolves them."""
    import torch

    path = find_file(module, folder)
    if path is None:
        raise UserError(f"ControlNet preprocessor {module} needs its annotator file: {missing(folder)[module]}")
    family, net = load(module, path)
    with torch.no_grad():
        return family.detect(net, pixels, module, a, b)


def padded64(pixels: np.ndarray, detect) -> np.ndarray:
    """`detect` run on the picture padded (edge pixels repeated, right and bottom) to multiples of 64, its map
    cropped back: the extension's resize_image_with_pad / remove_pad, for networks that halve the size."""
    h, w = pixels.shape[:2]
    grown = np.pad(pixels, [[0, -h % 64], [0, -w % 64], [0, 0]], mode="edge")
    return np.ascontiguousarray(detect(grown)[:h, :w])
