"""Upscaler models (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, …: whatever spandrel reads) from the models folders
A1111 uses, listed by file name, loaded safely (safetensors, or pickles through spandrel's restricted unpickler),
cached in RAM and run in overlapping tiles so a large picture fits in memory.

spandrel imports torchvision for two architectures no upscaler here uses (LaMa, RestoreFormer); where
torchvision cannot be imported (its PyPI builds do not load against the CPU torch these machines run), the import
goes through a stand-in for just those names, removed again afterwards so nothing else ever sees it."""
from __future__ import annotations

import enum
import sys
import threading
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError

FOLDERS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT", "ScuNET", "Upscaler")  # under models/
SUFFIXES = (".pth", ".safetensors")
TILE, OVERLAP = 192, 8  # A1111's ESRGAN_tile / ESRGAN_tile_overlap defaults


@dataclass(frozen=True)
class UpscalerFile:
    name: str  # the file name without its suffix: what dropdowns and requests use
    path: Path


def _torchvision_stand_in() -> dict:
    def needs_torchvision(*args, **kwargs):
        raise UserError("this upscaler architecture needs torchvision, which cannot be imported here")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    functional.rotate = functional.normalize = needs_torchvision
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    return {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def spandrel():
    try:
        import spandrel as module
        return module
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("torchvision"):
            raise UserError("upscaler models need the spandrel package (pip install spandrel --no-deps)") from e
    stand_in = _torchvision_stand_in()
    saved = {name: sys.modules.get(name) for name in stand_in}
    sys.modules.update(stand_in)
    try:
        import spandrel as module
        return module
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class UpscalerModels:
    """The upscaler model files under models_dir's upscaler folders; loaded ones kept in RAM (LRU)."""

    def __init__(self, models_dir: Path, keep: int = 2):
        self.models_dir, self.keep = Path(models_dir), keep
        self._loaded: OrderedDict[Path, object] = OrderedDict()
        self._lock = threading.Lock()

    def files(self) -> list[UpscalerFile]:
        found, seen = [], set()
        for folder in FOLDERS:
            root = self.models_dir / folder
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*"), key=lambda p: str(p).lower()):
                if path.suffix.lower() in SUFFIXES and path.is_file() and path.stem not in seen:
                    seen.add(path.stem)
                    found.append(UpscalerFile(path.stem, path))
        return found

    def names(self) -> list[str]:
        return [f.name for f in self.files()]

    def find(self, name: str) -> UpscalerFile | None:
        return next((f for f in self.files() if f.name == name), None)

    def load(self, name: str):
        """The model as a spandrel ImageModelDescriptor (eval, on the CPU); UserError for a file spandrel
        cannot read or that is not a picture-to-picture model."""
        info = self.find(name)
        if info is None:
            raise UserError(f"no upscaler model named {name!r}")
        with self._lock:
            if info.path in self._loaded:
                self._loaded.move_to_end(info.path)
                return self._loaded[info.path]
            module = spandrel()
            try:
                descriptor = module.ModelLoader(device="cpu").load_from_file(info.path)
            except UserError:
                raise
            except Exception as e:  # unreadable, unsafe pickle, unknown architecture: one message
                raise UserError(f"cannot load upscaler {info.path.name}: {type(e).__name__}: {str(e)[:300]}") from e
            if not isinstance(descriptor, module.ImageModelDescriptor) or descriptor.input_channels != 3:
                raise UserError(f"{info.path.name} is not an RGB upscaler model ({descriptor.architecture.name})")
            descriptor.eval()
            self._loaded[info.path] = descriptor
            while len(self._loaded) > max(self.keep, 1):
                self._loaded.popitem(last=False)
            return descriptor

    def scale(self, name: str) -> int:
        return int(self.load(name).scale)

    def upscale(self, image: Image.Image, name: str, tile: int = TILE, overlap: int = OVERLAP) -> Image.Image:
        """One pass of the model: the picture times the model's scale."""
        model = self.load(name)
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        out = run_tiled(model, x, int(model.scale), tile, overlap)
        pixels = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(pixels)


@torch.no_grad()
def run_tiled(model, x: torch.Tensor, scale: int, tile: int, overlap: int) -> torch.Tensor:
    """model(x) for a (1, 3, H, W) batch, in tiles of `tile` pixels overlapping by `overlap`, blended with linear
    ramps where they overlap (a tile's edge, where the model sees least context, weighs least)."""
    _, channels, height, width = x.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return model(x).float()
    step = max(tile - overlap, 1)
    out = torch.zeros(1, channels, height * scale, width * scale)
    weight = torch.zeros(1, 1, height * scale, width * scale)
    for top in _starts(height, tile, step):
        for left in _starts(width, tile, step):
            piece = x[:, :, top:top + tile, left:left + tile]
            result = model(piece).float()
            h, w = result.shape[-2:]
            ramp = _ramp(h, w, overlap * scale, top > 0, top + tile < height, left > 0, left + tile < width)
            out[:, :, top * scale:top * scale + h, left * scale:left * scale + w] += result * ramp
            weight[:, :, top * scale:top * scale + h, left * scale:left * scale + w] += ramp
    return out / weight.clamp_min(1e-8)


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _ramp(h: int, w: int, fade: int, top: bool, bottom: bool, left: bool, right: bool) -> torch.Tensor:
    def axis(n, start, end):
        values = torch.ones(n)
        if fade > 0:
            ramp = torch.linspace(1.0 / (fade + 1), 1.0, fade)[:n]
            if start:
                values[:len(ramp)] = torch.minimum(values[:len(ramp)], ramp)
            if end:
                values[n - len(ramp):] = torch.minimum(values[n - len(ramp):], ramp.flip(0))
        return values
    return (axis(h, top, bottom)[:, None] * axis(w, left, right)[None, :])[None, None]
