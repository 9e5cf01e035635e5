"""Image grids and their legends, drawn the way AUTOMATIC1111 1.10 draws them (`modules/images.py` image_grid,
draw_grid_annotations, draw_prompt_matrix), so a grid saved here looks like one saved there.

Pure PIL. Differences from A1111, all where A1111 would crash or spoil a picture:
- the font needs no download: DejaVu Sans when the system has it, else Pillow's built-in scalable font;
- the shrink-to-fit loop stops at 1 pt (A1111 asks for a 0 pt font, which Pillow refuses);
- cells are pasted after the legends, so a label too long even at 1 pt can never paint over a picture.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

# A1111's option defaults: grid_background_color, grid_text_active_color, grid_text_inactive_color.
BACKGROUND = "#ffffff"
TEXT_ACTIVE = "#000000"
TEXT_INACTIVE = "#999999"

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
    "DejaVuSans.ttf",  # Pillow also searches the system's font folders by name
)


def grid_rows(count: int, batch_size: int = 1, n_rows_setting: int = -1, prevent_empty_spots: bool = False) -> int:
    """A1111's "Grid row count" rule (opts.n_rows): >0 that many, 0 one row per batch, -1 about square.

    "About square" is round(sqrt(count)) (so 5 images give 2 rows and an empty spot); with A1111's
    grid_prevent_empty_spots it is floor(sqrt) lowered until it divides count. Never more rows than images,
    as A1111 1.10 clamps; never fewer than one, so an empty batch cannot divide by zero."""
    if n_rows_setting > 0:
        rows = n_rows_setting
    elif n_rows_setting == 0:
        rows = batch_size
    elif prevent_empty_spots:
        rows = max(1, math.floor(math.sqrt(count)))
        while count % rows != 0:
            rows -= 1
    else:
        rows = round(math.sqrt(count))
    return max(1, min(rows, count))


def image_grid(images: Sequence[Image.Image], rows: int, background: str = BACKGROUND) -> Image.Image:
    """Lay images out left to right, then top to bottom, on A1111 1.10's grid: every cell the size of the
    largest image (A1111 1.10 takes the maximum; equal sizes make that the first image's), smaller images
    centred in theirs, and the spots past the last image left in the grid background colour (white by default;
    A1111 before 1.6 left them black)."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    rows = max(1, min(rows, len(images)))
    cols = math.ceil(len(images) / rows)
    w = max(img.width for img in images)
    h = max(img.height for img in images)
    grid = Image.new("RGB", (cols * w, rows * h), background)
    for i, img in enumerate(images):
        dx, dy = (w - img.width) // 2, (h - img.height) // 2
        grid.paste(img.convert("RGB"), (i % cols * w + dx, i // cols * h + dy))
    return grid


class GridAnnotation:
    """One legend line. An inactive one (a prompt-matrix part that is off in that column) is drawn grey and struck
    through. `size` and `allowed_width` are filled in while laying out, as in A1111."""

    def __init__(self, text: str = "", is_active: bool = True):
        self.text = text
        self.is_active = is_active
        self.size: tuple[int, int] | None = None
        self.allowed_width = 0

    def __repr__(self) -> str:
        return f"GridAnnotation({self.text!r}, is_active={self.is_active})"


@functools.lru_cache(maxsize=256)
def get_font(size: int, path: str | None = None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font that is always there: `path` if it opens, else DejaVu Sans, else Pillow's bundled one (≥10.1
    scales it). Cached because the fitting loop asks for every size from the legend's down."""
    size = max(1, int(size))
    for candidate in ((path,) if path else ()) + _FONT_CANDIDATES:
        if os.path.isabs(candidate) and not os.path.exists(candidate):
            continue
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> list[str]:
    # A1111's greedy word wrap: a word wider than the whole width still gets a line of its own.
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if draw.textlength(line, font=font) <= width:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: list[list[GridAnnotation]],
                          ver_texts: list[list[GridAnnotation]], margin: int = 0, *, font_path: str | None = None,
                          background: str = BACKGROUND, text_color: str = TEXT_ACTIVE,
                          inactive_color: str = TEXT_INACTIVE) -> Image.Image:
    """Add column legends above and row legends to the left of a grid of `width`×`height` cells, with `margin`
    pixels between cells, as A1111 does. Sizes follow A1111: font (width+height)//25 pt, line spacing half that,
    the left band 3/4 of a cell wide (none when every row label is empty), the top band as tall as the tallest
    wrapped column label plus a line spacing above and below (none when every column label is empty).

    Like A1111, hor_texts/ver_texts are rewritten in place into their wrapped lines."""
    cols, rows = im.width // width, im.height // height
    if cols != len(hor_texts):
        raise ValueError(f"bad number of horizontal texts: {len(hor_texts)}; must be {cols}")
    if rows != len(ver_texts):
        raise ValueError(f"bad number of vertical texts: {len(ver_texts)}; must be {rows}")

    fontsize = (width + height) // 25
    line_spacing = fontsize // 2
    font = get_font(fontsize, font_path)
    pad_left = 0 if sum(len(line.text) for lines in ver_texts for line in lines) == 0 else width * 3 // 4

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1), background))
    for texts, allowed in zip(hor_texts + ver_texts, [width] * len(hor_texts) + [pad_left] * len(ver_texts)):
        items = list(texts)
        texts.clear()
        for item in items:
            texts += [GridAnnotation(part, item.is_active) for part in _wrap(measure, item.text, font, allowed)]
        for line in texts:
            left, top, right, bottom = measure.multiline_textbbox((0, 0), line.text, font=font)
            line.size = (right - left, bottom - top)
            line.allowed_width = allowed

    hor_heights = [sum(line.size[1] + line_spacing for line in lines) - line_spacing for lines in hor_texts]
    # A1111 subtracts the spacing once per line here (not once per block): kept, it centres rows as A1111 does.
    ver_heights = [sum(line.size[1] + line_spacing for line in lines) - line_spacing * len(lines)
                   for lines in ver_texts]
    pad_top = 0 if sum(hor_heights) == 0 else max(hor_heights) + line_spacing * 2

    result = Image.new("RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)),
                       background)
    draw = ImageDraw.Draw(result)

    def draw_lines(x: float, y: float, lines: list[GridAnnotation]) -> None:
        for line in lines:
            # A1111's fitting loop: shrink this line's font one point at a time until it fits its band.
            size, fnt = fontsize, font
            while size > 1 and draw.textlength(line.text, font=fnt) > line.allowed_width:
                size -= 1
                fnt = get_font(size, font_path)
            color = text_color if line.is_active else inactive_color
            draw.multiline_text((x, y + line.size[1] / 2), line.text, font=fnt, fill=color, anchor="mm",
                                align="center")
            if not line.is_active:
                mid = y + line.size[1] // 2
                draw.line((x - line.size[0] // 2, mid, x + line.size[0] // 2, mid), fill=inactive_color, width=4)
            y += line.size[1] + line_spacing

    for col in range(cols):
        draw_lines(pad_left + (width + margin) * col + width / 2, pad_top / 2 - hor_heights[col] / 2, hor_texts[col])
    for row in range(rows):
        draw_lines(pad_left / 2, pad_top + (height + margin) * row + height / 2 - ver_heights[row] / 2, ver_texts[row])

    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))
    return result


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: Sequence[str], margin: int = 0,
                       **kwargs) -> Image.Image:
    """Legends for the Prompt matrix script: all_prompts[0] is the part always present; the first half
    (rounded up) of the rest label the columns, the others the rows, each column/row index read as a bit mask of
    which parts are on (A1111's layout, so the cell at column c, row r has parts c | r << len(columns))."""
    parts = list(all_prompts[1:])
    boundary = math.ceil(len(parts) / 2)
    horiz, vert = parts[:boundary], parts[boundary:]
    hor_texts = [[GridAnnotation(p, is_active=pos & (1 << i) != 0) for i, p in enumerate(horiz)]
                 for pos in range(1 << len(horiz))]
    ver_texts = [[GridAnnotation(p, is_active=pos & (1 << i) != 0) for i, p in enumerate(vert)]
                 for pos in range(1 << len(vert))]
    return draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin, **kwargs)
