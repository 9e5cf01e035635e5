"""Preprocessors that need annotator weights: run only from files the user put in `models/ControlNet-annotators`
(never downloaded), listed only when their file is there; otherwise named as unavailable with the file to put
where. The extension's own file names are kept, so an A1111 user's `extensions/sd-webui-controlnet/annotator/
downloads` files can be copied in as they are.

This version runs HED soft edges (softedge_hed, softedge_hedsafe) with lllyasviel's Apache-2.0 HED
(`ControlNetHED.pth`): five VGG-style blocks, each with a 1×1 projection to one edge channel; the five edge maps
are upsampled to the picture, averaged and squashed with a sigmoid ("safe" quantises them to three levels)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError

SOURCE = "lllyasviel/Annotators on Hugging Face"


@dataclass(frozen=True)
class Annotator:
    file: str  # in models/ControlNet-annotators (any depth)
    source: str = SOURCE


ANNOTATORS = {"softedge_hed": Annotator("ControlNetHED.pth"), "softedge_hedsafe": Annotator("ControlNetHED.pth")}
DEFAULTS = {"softedge_hed": (None, None), "softedge_hedsafe": (None, None)}

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


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, convs: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(convs)])
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x, pool: bool):
        if pool:
            x = nn.functional.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x, self.projection(x)


class HED(nn.Module):
    """The network behind ControlNetHED.pth, with its key names (norm, blockN.convs.K, blockN.projection)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (cin, cout, convs) in enumerate([(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3),
                                                (512, 512, 3)], start=1):
            self.add_module(f"block{i}", _Block(cin, cout, convs))

    def forward(self, x):
        x, edges = x - self.norm, []
        for i in range(1, 6):
            x, edge = getattr(self, f"block{i}")(x, pool=i > 1)
            edges.append(edge)
        return edges


def _hed(path: Path) -> HED:
    key = (path, path.stat().st_mtime_ns)
    with _lock:
        if key not in _loaded:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                net = HED()
                net.load_state_dict(state, strict=True)
            except Exception as e:  # noqa: BLE001 - a wrong or broken file is the user's to replace
                raise UserError(f"cannot use {path.name} as the HED annotator: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
            _loaded.clear()  # one annotator in memory at a time
            _loaded[key] = net.eval().requires_grad_(False)
        return _loaded[key]


def run(module: str, pixels: np.ndarray, folder: Path | None) -> np.ndarray:
    """The map (uint8, H×W) of an RGB uint8 picture already at the processor resolution."""
    import cv2

    path = find_file(module, folder)
    if path is None:
        raise UserError(f"ControlNet preprocessor {module} needs its annotator file: {missing(folder)[module]}")
    net = _hed(path)
    h, w = pixels.shape[:2]
    with torch.no_grad():
        edges = net(torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None])
    maps = [cv2.resize(e[0, 0].numpy().astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for e in edges]
    edge = 1 / (1 + np.exp(-np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)))
    if module == "softedge_hedsafe":  # three levels: 0, 0.5, 1 (× 1.5 then floored, halved)
        edge = np.floor(edge * 3.0) / 2.0
    return (edge * 255.0).clip(0, 255).astype(np.uint8)
