"""A deterministic judge for pictures of the shapes world: does a picture show what its scene asked for?

Each pixel is given the nearest palette colour. The background is the commonest colour of the border; the
object is the largest connected region of other colours. Then: its commonest colour, the anchor nearest its
centroid, and its shape by nearest prototype over a few silhouette measures (fill of the bounding box, a hole
in the middle, where the mass sits vertically, aspect), prototypes measured on clean renders. Stripes are
found by the energy at the stripe frequency along y inside the object's box.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from . import shapes

PALETTE_NAMES = list(shapes.COLORS)
PALETTE = np.array([shapes.COLORS[n] for n in PALETTE_NAMES], dtype=np.float32)
MIN_OBJECT_PIXELS = 8


@dataclass(frozen=True)
class Verdict:
    object_color: bool
    background: bool
    position: bool
    shape: bool

    @property
    def all(self) -> bool:
        return self.object_color and self.background and self.position and self.shape


@dataclass(frozen=True)
class Seen:
    background: str
    color: str | None
    position: str | None
    shape: str | None


def _labels(pixels: np.ndarray) -> np.ndarray:
    d = ((pixels[..., None, :].astype(np.float32) - PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def _mode(values: np.ndarray) -> int:
    return int(np.bincount(values.ravel(), minlength=len(PALETTE)).argmax())


def _object_mask(labels: np.ndarray, background: int) -> np.ndarray | None:
    regions, n = ndimage.label(labels != background)
    if n == 0:
        return None
    sizes = ndimage.sum(np.ones_like(regions), regions, range(1, n + 1))
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < MIN_OBJECT_PIXELS:
        return None
    return regions == best


def _features(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    fill = mask.sum() / (h * w)
    # a ring's middle is background; sample the central third of the box
    cy0, cy1, cx0, cx1 = y0 + h // 3, y1 - h // 3, x0 + w // 3, x1 - w // 3
    middle = mask[cy0:max(cy1, cy0 + 1), cx0:max(cx1, cx0 + 1)]
    hole = 1.0 - middle.mean()
    mass = (ys.mean() - (y0 + y1 - 1) / 2) / h  # triangles are bottom-heavy, stars nearly balanced
    return np.array([fill, hole, mass * 3, w / h], dtype=np.float32)


def _anchor(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() / mask.shape[0], xs.mean() / mask.shape[1]
    return min(shapes.POSITIONS, key=lambda p: (shapes.POSITIONS[p][0] - cx) ** 2 + (shapes.POSITIONS[p][1] - cy) ** 2)


@functools.lru_cache(maxsize=1)
def _prototypes() -> dict[str, np.ndarray]:
    """Mean silhouette measures per shape, from jittered renders (fixed seed: the judge never changes)."""
    rng = random.Random("judge-prototypes")
    feats: dict[str, list] = {s: [] for s in shapes.SHAPES}
    for _ in range(400):
        scene = shapes.random_scene(rng, two_objects=0.0)
        labels = _labels(np.asarray(shapes.render(scene, rng)))
        mask = _object_mask(labels, _mode(_border(labels)))
        if mask is not None:
            feats[scene.things[0].shape].append(_features(mask))
    return {s: np.mean(f, axis=0) for s, f in feats.items()}


def _border(labels: np.ndarray, width: int = 2) -> np.ndarray:
    return np.concatenate([labels[:width].ravel(), labels[-width:].ravel(), labels[:, :width].ravel(),
                           labels[:, -width:].ravel()])


def look(image: Image.Image) -> Seen:
    """What a picture shows, in the dataset's words."""
    labels = _labels(np.asarray(image.convert("RGB").resize((shapes.SIZE, shapes.SIZE), Image.Resampling.BOX)))
    background = _mode(_border(labels))
    mask = _object_mask(labels, background)
    if mask is None:
        return Seen(PALETTE_NAMES[background], None, None, None)
    protos = _prototypes()
    f = _features(mask)
    shape = min(protos, key=lambda s: float(((protos[s] - f) ** 2).sum()))
    return Seen(PALETTE_NAMES[background], PALETTE_NAMES[_mode(labels[mask])], _anchor(mask), shape)


def object_mask(image: Image.Image) -> tuple[np.ndarray | None, str | None]:
    """The picture's main object as a boolean mask at the native size, and its colour name (None, None when
    there is no object)."""
    labels = _labels(np.asarray(image.convert("RGB").resize((shapes.SIZE, shapes.SIZE), Image.Resampling.BOX)))
    mask = _object_mask(labels, _mode(_border(labels)))
    return (mask, PALETTE_NAMES[_mode(labels[mask])]) if mask is not None else (None, None)


def iou(a: np.ndarray | None, b: np.ndarray) -> float:
    if a is None:
        return 0.0
    return float((a & b).sum() / max((a | b).sum(), 1))


def judge(image: Image.Image, scene: shapes.Scene) -> Verdict:
    """Score a one-object picture against the scene its prompt described."""
    seen, want = look(image), scene.things[0]
    return Verdict(object_color=seen.color == want.color, background=seen.background == scene.background,
                   position=seen.position == want.position, shape=seen.shape == want.shape)


def stripe_score(image: Image.Image, period: int = shapes.STRIPE_PERIOD) -> float:
    """RMS strength (0–255 luminance units) of the object's brightness variation at the stripe frequency along y.

    Flat fills score a few units (edges, noise); the dataset's stripes score tens."""
    rgb = np.asarray(image.convert("RGB").resize((shapes.SIZE, shapes.SIZE), Image.Resampling.BOX), np.float32)
    border = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3), rgb[:, :2].reshape(-1, 3),
                             rgb[:, -2:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    # Far from the background colour, then closed: a stripe band of a colour near the background stays inside.
    fg = np.sqrt(((rgb - background) ** 2).sum(-1)) > 40
    fg = ndimage.binary_closing(fg, iterations=3) & ndimage.binary_erosion(
        ndimage.binary_closing(fg, iterations=3), iterations=1)
    regions, n = ndimage.label(fg)
    if n == 0:
        return 0.0
    sizes = ndimage.sum(np.ones_like(regions), regions, range(1, n + 1))
    inside = regions == int(np.argmax(sizes)) + 1
    if inside.sum() < MIN_OBJECT_PIXELS:
        return 0.0
    luma = rgb.mean(-1)
    ys, xs = np.nonzero(inside)
    values = luma[ys, xs] - luma[ys, xs].mean()
    wave = np.exp(-2j * np.pi * ys / period)
    return float(np.abs((values * wave).sum()) / len(values) * np.sqrt(2))


# Set from VAE round trips of the dataset: flat fills score ≤ 17 in 95 % of pictures, clean stripes ≥ 28.
STRIPE_THRESHOLD = 17.0


def striped(image: Image.Image) -> bool:
    return stripe_score(image) >= STRIPE_THRESHOLD
