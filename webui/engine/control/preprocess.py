"""Preprocessors that need no weights, as the extension's (canny, invert, blur, threshold, …), and how a control
map is fitted to the job's size (its three resize modes) and pixel-perfect resolution."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import UserError

# name → (function(rgb uint8 HxWx3, resolution, a, b) → uint8 map, threshold a default, threshold b default)
DEFAULTS = {"none": (None, None), "invert": (None, None), "canny": (100, 200), "blur_gaussian": (9.0, None),
            "threshold": (127, None), "scribble_xdog": (32, None), "lineart_standard": (None, None),
            "tile_resample": (1.0, None), "color": (None, None), "recolor_luminance": (1.0, None),
            "recolor_intensity": (1.0, None), "shuffle": (None, None), "tile_colorfix": (8.0, None),
            "inpaint": (None, None), "inpaint_only": (None, None)}
# the map is the picture itself; what these do happens in the job (engine/control/latent_fix.py, residuals.py)
PASSTHROUGH = {"none", "tile_colorfix", "inpaint", "inpaint_only"}
MASKED = {"inpaint", "inpaint_only"}  # the unit's mask marks its map's pixels as "to be filled" (−1)


def _resize_short(image: np.ndarray, resolution: int) -> np.ndarray:
    """The extension's resize_image_with_pad core: the short side to `resolution`, area/cubic interpolation."""
    import cv2

    h, w = image.shape[:2]
    k = resolution / min(h, w)
    size = (max(int(round(w * k)), 1), max(int(round(h * k)), 1))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)


def modules(annotators_dir=None) -> list[str]:
    """The preprocessors this install can run: the weightless ones, then annotators whose file is there."""
    from . import annotators
    return [*DEFAULTS, *annotators.available(annotators_dir)]


def thresholds(module: str, a: float | None = -1, b: float | None = -1) -> tuple:
    """Threshold A and B as `module` uses them: a value left at -1 (or None) is the preprocessor's default."""
    from . import annotators

    default_a, default_b = DEFAULTS.get(module) or annotators.DEFAULTS.get(module, (None, None))
    return (default_a if (a is None or a < 0) and default_a is not None else a,
            default_b if (b is None or b < 0) and default_b is not None else b)


def run(module: str, image: Image.Image, resolution: int = 512, a: float = -1, b: float = -1,
        seed: int = 0, annotators_dir=None) -> Image.Image:
    """The detected map for `image` (RGB picture), as the extension's preprocessor `module` makes it; `seed`
    draws shuffle's random flow (the job's seed, so a job repeats); annotators read their weights from
    `annotators_dir` (models/ControlNet-annotators)."""
    import cv2

    from . import annotators

    if module in annotators.ANNOTATORS:
        pixels = _resize_short(np.asarray(image.convert("RGB")), resolution if resolution and resolution > 0 else 512)
        out = annotators.run(module, pixels, annotators_dir, *thresholds(module, a, b))
        return Image.fromarray(np.stack([out] * 3, axis=-1))
    if module not in DEFAULTS:
        raise UserError(f"ControlNet preprocessor {module!r} is not available here (available: "
                        f"{', '.join(modules(annotators_dir))})")
    a, b = thresholds(module, a, b)
    rgb = np.asarray(image.convert("RGB"))
    if module in PASSTHROUGH:
        return Image.fromarray(rgb)
    if module == "invert":
        return Image.fromarray(255 - rgb)
    resolution = resolution if resolution and resolution > 0 else 512
    pixels = _resize_short(rgb, resolution)
    if module == "canny":
        edges = cv2.Canny(pixels, int(a), int(b))
        return Image.fromarray(np.stack([edges] * 3, axis=-1))
    if module == "shuffle":
        return Image.fromarray(_shuffle(pixels, seed))
    if module == "blur_gaussian":
        sigma = max(float(a), 0.01)
        return Image.fromarray(cv2.GaussianBlur(pixels, (0, 0), sigma))
    if module in EXTRA:
        out = EXTRA[module](pixels, a, b)
        return Image.fromarray(np.stack([out] * 3, axis=-1) if out.ndim == 2 else out)
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)  # threshold
    out = np.where(gray > a, 255, 0).astype(np.uint8)
    return Image.fromarray(np.stack([out] * 3, axis=-1))


def _shuffle(pixels, seed: int, cell: int = 256):
    """Content shuffle: every pixel fetched from where two smooth random fields (one per axis, cubic-upsampled
    from a grid of `cell` pixels, stretched over the picture) point, as the extension's shuffle detector."""
    import cv2

    h, w = pixels.shape[:2]
    rng = np.random.default_rng(seed & 0xFFFFFFFF)

    def field(extent: int) -> np.ndarray:
        coarse = rng.uniform(0, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
        smooth = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)[cell:cell + h,
                                                                                                    cell:cell + w]
        smooth = smooth - smooth.min()
        return smooth / max(float(smooth.max()), 1e-6) * float(extent - 1)

    map_x, map_y = field(w), field(h)
    return cv2.remap(pixels, map_x, map_y, cv2.INTER_LINEAR)


def _scribble_xdog(pixels, a, b):
    """Difference of Gaussians (σ 0.5 and 5), lines where it passes threshold A."""
    import cv2

    x = pixels.astype(np.float32)
    dog = (255 - np.min(cv2.GaussianBlur(x, (0, 0), 5.0) - cv2.GaussianBlur(x, (0, 0), 0.5), axis=2)).clip(0, 255)
    out = np.zeros(pixels.shape[:2], dtype=np.uint8)
    out[2 * (255 - dog) > a] = 255
    return out


def _lineart_standard(pixels, a, b):
    """Darker-than-surroundings intensity (σ 6 blur), normalised by its median, as white lines on black."""
    import cv2

    x = pixels.astype(np.float32)
    intensity = np.min(cv2.GaussianBlur(x, (0, 0), 6.0) - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 16.0)
    return (intensity * 127).clip(0, 255).astype(np.uint8)


def _tile_resample(pixels, a, b):
    """Down-sampled by threshold A (≥ 1.1; below that the picture as it is)."""
    import cv2

    if a < 1.1:
        return pixels
    h, w = pixels.shape[:2]
    return cv2.resize(pixels, (max(int(w / a), 1), max(int(h / a), 1)), interpolation=cv2.INTER_AREA)


def _color(pixels, a, b):
    """A 64× coarser colour layout, blown back up in blocks."""
    import cv2

    h, w = pixels.shape[:2]
    small = cv2.resize(pixels, (max(w // 64, 1), max(h // 64, 1)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _recolor(channel_of):
    def recolor(pixels, a, b):
        value = channel_of(pixels).astype(np.float32) / 255.0
        return ((value ** float(a)) * 255.0).clip(0, 255).astype(np.uint8)
    return recolor


def _luminance(pixels):
    import cv2
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB)[:, :, 0]


def _intensity(pixels):
    import cv2
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)[:, :, 2]


EXTRA = {"scribble_xdog": _scribble_xdog, "lineart_standard": _lineart_standard, "tile_resample": _tile_resample,
         "color": _color, "recolor_luminance": _recolor(_luminance), "recolor_intensity": _recolor(_intensity)}


def fit(hint: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """The map at the job's size: Just Resize stretches; Crop and Resize covers then centre-crops; Resize and
    Fill fits inside and pads with black (the extension pads with the edge's mean; black keeps edge maps clean)."""
    if mode == "Just Resize":
        return hint.resize((width, height), Image.Resampling.LANCZOS)
    scale = (max if mode == "Crop and Resize" else min)(width / hint.width, height / hint.height)
    size = (max(round(hint.width * scale), 1), max(round(hint.height * scale), 1))
    resized = hint.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def pixel_perfect_resolution(image: Image.Image, width: int, height: int, mode: str) -> int:
    """The extension's pixel-perfect processor resolution: the map comes out at the size it will be used."""
    raw_w, raw_h = image.size
    k_w, k_h = width / raw_w, height / raw_h
    k = min(k_w, k_h) if mode == "Resize and Fill" else max(k_w, k_h)
    return int(np.round(min(raw_w, raw_h) * k))
