"""The demo model's world: coloured shapes on plain backgrounds, drawn procedurally with A1111-style captions.

A scene is a plain background with one or two shapes. Every scene is a pure function of an integer (its index)
and the dataset seed, so a training run resumed at any step sees exactly the pictures a fresh run would.

Captions come in two sets of wordings: TRAIN_TEMPLATES (what the model is trained on) and HELD_OUT_TEMPLATES
(the same words in orders never seen in training) for the quality benchmark.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # native resolution
RECIPE_VERSION = "shapes-v1"

COLORS = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (245, 225, 40), "green": (40, 170, 60),
    "cyan": (40, 200, 220), "blue": (40, 70, 220), "purple": (140, 50, 180), "pink": (245, 130, 190),
    "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "ring")
# Object centres as fractions of the picture; "centre" also answers to "center" in captions.
POSITIONS = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73),
             "centre": (0.5, 0.5)}
RADII = {"small": 0.14, "large": 0.22}  # circumradius as a fraction of the picture
FILLS = ("plain", "striped")
# Horizontal stripes, one dark and one light band per period. The VAE is trained on fine ones (8 px: one period
# per latent pixel); the demo LoRA's "striped" style is wide (16 px), which a small VAE keeps through a round trip.
FINE_STRIPE_PERIOD = 8
STRIPE_PERIOD = 16

_POS_WORDS = {
    "left": ("on the left", "at the left", "left side", "left"),
    "right": ("on the right", "at the right", "right side", "right"),
    "top": ("at the top", "on top", "top side", "top"),
    "bottom": ("at the bottom", "on the bottom", "bottom side", "bottom"),
    "centre": ("in the centre", "in the center", "centered", "center"),
}

# {obj} is "[size ]colour [striped ]shape"; {bg} a colour; {pos} a position phrase.
TRAIN_TEMPLATES = (
    "a {obj} on a {bg} background, {pos}",
    "a {obj} {pos} on a {bg} background",
    "{obj}, {bg} background, {pos}",
    "{bg} background, {obj}, {pos}",
    "a {obj} {pos}, {bg} background",
    "a picture of a {obj} {pos} on a {bg} background",
)
HELD_OUT_TEMPLATES = (
    "{obj} {pos}, on a {bg} background",
    "a {bg} background with a {obj} {pos}",
    "{pos}, a {obj}, {bg} background",
    "picture of a {obj} on a {bg} background {pos}",
)
TWO_TEMPLATES = (
    "a {obj} {pos} and a {obj2} {pos2} on a {bg} background",
    "{obj} {pos}, {obj2} {pos2}, {bg} background",
)


@dataclass(frozen=True)
class Thing:
    shape: str
    color: str
    position: str
    size: str
    fill: str = "plain"


@dataclass(frozen=True)
class Scene:
    background: str
    things: tuple[Thing, ...]


def _object_words(thing: Thing, rng: random.Random, with_size: bool) -> str:
    words = [thing.size] if with_size else []
    words.append(thing.color)
    if thing.fill == "striped":
        words.append("striped")
    words.append(thing.shape)
    return " ".join(words)


def caption(scene: Scene, rng: random.Random, templates=TRAIN_TEMPLATES, with_size: bool | None = None) -> str:
    """One wording of `scene`: unless `with_size` says, the size is said half the time."""
    first = scene.things[0]
    if with_size is None:
        with_size = rng.random() < 0.5
    pos = rng.choice(_POS_WORDS[first.position])
    if len(scene.things) == 1:
        return rng.choice(templates).format(obj=_object_words(first, rng, with_size), bg=scene.background, pos=pos)
    second = scene.things[1]
    return rng.choice(TWO_TEMPLATES).format(
        obj=_object_words(first, rng, with_size), pos=pos, obj2=_object_words(second, rng, with_size),
        pos2=rng.choice(_POS_WORDS[second.position]), bg=scene.background)


def random_scene(rng: random.Random, fills=("plain",), two_objects: float = 0.2) -> Scene:
    background = rng.choice(list(COLORS))
    others = [c for c in COLORS if c != background]
    if rng.random() < two_objects:
        a, b = rng.sample(others, 2)
        pair = rng.choice((("left", "right"), ("top", "bottom")))
        if rng.random() < 0.5:
            pair = pair[::-1]
        things = tuple(Thing(rng.choice(SHAPES), c, p, "small", rng.choice(fills)) for c, p in zip((a, b), pair))
    else:
        things = (Thing(rng.choice(SHAPES), rng.choice(others), rng.choice(list(POSITIONS)),
                        rng.choice(list(RADII)), rng.choice(fills)),)
    return Scene(background, things)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r / math.sqrt(2)
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # apex up; centred on its bounding box so "centre" means the same for all shapes
        h = r * 1.5
        return [(cx, cy - h / 2), (cx + h / math.sqrt(3), cy + h / 2), (cx - h / math.sqrt(3), cy + h / 2)]
    points = []  # star: five points, inner radius 0.45
    for k in range(10):
        rad = r if k % 2 == 0 else 0.45 * r
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle) + 0.1 * r))
    return points


def _shade(rgb, jitter: tuple[int, int, int]):
    return tuple(int(min(255, max(0, c + j))) for c, j in zip(rgb, jitter))


def _stripe_color(rgb):
    """The second band of a striped fill: the colour mixed halfway towards its opposite lightness."""
    light = sum(rgb) / 3 > 127
    target = 0 if light else 255
    return tuple(int(c + (target - c) * 0.55) for c in rgb)


def render(scene: Scene, rng: random.Random | None = None, size: int = SIZE,
           stripe_period: int = FINE_STRIPE_PERIOD) -> Image.Image:
    """The picture of `scene`, anti-aliased (drawn at 4× and reduced). With `rng`, colours, places and sizes
    jitter slightly, as a training set should; without, the drawing is canonical."""
    scale = 4
    big = size * scale
    jit = (lambda n: tuple(rng.randint(-n, n) for _ in range(3))) if rng else (lambda n: (0, 0, 0))
    move = (lambda: rng.uniform(-0.04, 0.04)) if rng else (lambda: 0.0)
    grow = (lambda: rng.uniform(0.9, 1.1)) if rng else (lambda: 1.0)
    image = Image.new("RGB", (big, big), _shade(COLORS[scene.background], jit(10)))
    for thing in scene.things:
        fx, fy = POSITIONS[thing.position]
        cx, cy, r = (fx + move()) * big, (fy + move()) * big, RADII[thing.size] * grow() * big
        color = _shade(COLORS[thing.color], jit(12))
        mask = Image.new("L", (big, big), 0)
        mdraw = ImageDraw.Draw(mask)
        if thing.shape in ("circle", "ring"):
            mdraw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
            if thing.shape == "ring":
                inner = 0.55 * r
                mdraw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
        else:
            mdraw.polygon(_polygon(thing.shape, cx, cy, r), fill=255)
        fill = Image.new("RGB", (big, big), color)
        if thing.fill == "striped":
            band = stripe_period * scale
            stripes = ImageDraw.Draw(fill)
            for y in range(0, big, band):
                stripes.rectangle((0, y + band // 2, big, y + band - 1), fill=_stripe_color(color))
        image.paste(fill, (0, 0), mask)
    return image.resize((size, size), Image.Resampling.BOX)


def sample(index: int, seed: int, fills=("plain",), two_objects: float = 0.2,
           stripe_period: int = FINE_STRIPE_PERIOD) -> tuple[Image.Image, str, Scene]:
    """Dataset item `index`: (picture, caption, scene), the same for the same arguments."""
    rng = random.Random(f"{seed}:{index}:{','.join(fills)}")
    scene = random_scene(rng, fills, two_objects)
    return render(scene, rng, stripe_period=stripe_period), caption(scene, rng), scene


def to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 127.5 - 1.0


def held_out_prompts(n: int = 120, seed: int = 12345) -> list[tuple[str, Scene]]:
    """`n` single-object prompts in held-out wordings (never a training caption), each with the scene it
    asks for. Sizes are always said, so the judge knows what to expect."""
    rng = random.Random(f"held-out:{seed}")
    out, seen = [], set()
    while len(out) < n:
        scene = random_scene(rng, two_objects=0.0)
        prompt = caption(scene, rng, HELD_OUT_TEMPLATES, with_size=True)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append((prompt, scene))
    return out
