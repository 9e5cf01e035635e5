"""Image grids and their legends (webui/engine/imaging/grid.py) against A1111 1.10's modules/images.py rules."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from webui.engine.imaging.grid import (GridAnnotation, draw_grid_annotations, draw_prompt_matrix, get_font,
                                       grid_rows, image_grid)

W = H = 64


def _cells(n, w=W, h=H, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(n)]


def _px(im):
    return np.asarray(im.convert("RGB")).astype(int)


def _assert_cells_at(result, cells, cols, left, top, margin=0):
    for i, cell in enumerate(cells):
        x, y = left + (W + margin) * (i % cols), top + (H + margin) * (i // cols)
        np.testing.assert_array_equal(_px(result.crop((x, y, x + W, y + H))), _px(cell), err_msg=f"cell {i}")


def _labels(texts, active=True):
    return [[GridAnnotation(t, active)] for t in texts]


# --- rows -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count, expected", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 2), (7, 3), (8, 3), (9, 3),
                                             (10, 3), (12, 3), (13, 4), (16, 4)])
def test_rows_autodetect_is_rounded_sqrt(count, expected):
    # A1111 images.image_grid: rows = round(math.sqrt(len(imgs))) when opts.n_rows == -1.
    assert grid_rows(count, 1, -1) == expected


@pytest.mark.parametrize("count, expected", [(7, 1), (8, 2), (6, 2), (12, 3), (16, 4), (5, 1)])
def test_rows_prevent_empty_spots(count, expected):
    # A1111: rows = floor(sqrt(n)); while n % rows: rows -= 1 (opts.grid_prevent_empty_spots).
    assert grid_rows(count, 1, -1, prevent_empty_spots=True) == expected


def test_rows_fixed_and_batch_size_and_clamp():
    assert grid_rows(9, 1, 3) == 3
    assert grid_rows(8, 4, 0) == 4  # 0: one row per batch
    assert grid_rows(2, 1, 4) == 2  # A1111 1.10: never more rows than images
    assert grid_rows(0, 1, -1) == 1


# --- image_grid ---------------------------------------------------------------------------------------------------


def test_image_grid_places_cells_row_major():
    cells = _cells(5)
    grid = image_grid(cells, rows=2)
    assert grid.size == (3 * W, 2 * H)
    _assert_cells_at(grid, cells, cols=3, left=0, top=0)
    # The spot after the last image is the grid background (A1111 1.10 default #ffffff).
    assert (_px(grid.crop((2 * W, H, 3 * W, 2 * H))) == 255).all()


def test_image_grid_single_row_and_column():
    cells = _cells(3)
    assert image_grid(cells, rows=1).size == (3 * W, H)
    assert image_grid(cells, rows=3).size == (W, 3 * H)
    assert image_grid(cells, rows=10).size == (W, 3 * H)  # clamped to the image count


def test_image_grid_centres_smaller_images():
    big = Image.new("RGB", (10, 10), (255, 0, 0))
    small = Image.new("RGB", (4, 6), (0, 0, 255))
    grid = image_grid([big, small], rows=1)
    assert grid.size == (20, 10)
    px = _px(grid)
    assert (px[2:8, 13:17] == [0, 0, 255]).all()
    assert (px[0:2, 10:20] == 255).all() and (px[:, 10:13] == 255).all()


def test_image_grid_converts_modes():
    grid = image_grid([Image.new("L", (4, 4), 100), Image.new("RGBA", (4, 4), (1, 2, 3, 255))], rows=1)
    assert grid.mode == "RGB"
    assert grid.getpixel((0, 0)) == (100, 100, 100) and grid.getpixel((4, 0)) == (1, 2, 3)


def test_image_grid_empty_is_an_error():
    with pytest.raises(ValueError):
        image_grid([], rows=1)


# --- legends ------------------------------------------------------------------------------------------------------


def test_font_needs_no_download():
    font = get_font(12)
    assert font.getlength("abc") > 0
    assert get_font(0).getlength("abc") > 0  # clamped to 1 pt


def test_annotations_add_bands_and_keep_cells_in_place():
    cells = _cells(4)
    grid = image_grid(cells, rows=2)
    out = draw_grid_annotations(grid, W, H, _labels(["x one", "x two"]), _labels(["y one", "y two"]))
    pad_left = W * 3 // 4  # A1111: width * 3 // 4 when any row label has text
    pad_top = out.height - 2 * H
    assert out.width == 2 * W + pad_left
    fontsize = (W + H) // 25
    assert pad_top > 2 * (fontsize // 2)  # tallest label + line_spacing above and below
    _assert_cells_at(out, cells, cols=2, left=pad_left, top=pad_top)
    # Label bands are white with dark text, never black.
    top_band = _px(out.crop((pad_left, 0, out.width, pad_top)))
    left_band = _px(out.crop((0, pad_top, pad_left, out.height)))
    for band in (top_band, left_band):
        assert (band == 255).all(axis=2).mean() > 0.5
        assert band.min() < 80


def test_annotations_with_margin():
    cells = _cells(6)
    grid = image_grid(cells, rows=2)
    out = draw_grid_annotations(grid, W, H, _labels("abc"), _labels("de"), margin=10)
    pad_left = W * 3 // 4
    pad_top = out.height - 2 * H - 10
    assert out.width == 3 * W + pad_left + 2 * 10
    _assert_cells_at(out, cells, cols=3, left=pad_left, top=pad_top, margin=10)
    assert (_px(out.crop((pad_left + W, pad_top, pad_left + W + 10, pad_top + H))) == 255).all()


def test_empty_labels_add_no_band():
    cells = _cells(2)
    grid = image_grid(cells, rows=1)
    only_columns = draw_grid_annotations(grid, W, H, _labels(["a", "b"]), _labels([""]))
    assert only_columns.width == 2 * W  # no row labels: pad_left = 0
    only_rows = draw_grid_annotations(grid, W, H, _labels(["", ""]), _labels(["row"]))
    assert only_rows.size == (2 * W + W * 3 // 4, H)  # no column labels: pad_top = 0
    _assert_cells_at(only_rows, cells, cols=2, left=W * 3 // 4, top=0)


def test_wrong_label_count_is_an_error():
    grid = image_grid(_cells(2), rows=1)
    with pytest.raises(ValueError, match="horizontal"):
        draw_grid_annotations(grid, W, H, _labels(["a"]), _labels([""]))


def _dark_columns(band, threshold=200):
    return np.nonzero((band < threshold).any(axis=2).any(axis=0))[0]


def test_long_column_label_wraps_inside_its_cell():
    cells = _cells(2)
    grid = image_grid(cells, rows=1)
    short = draw_grid_annotations(grid, W, H, _labels(["a", "b"]), _labels([""]))
    words = "a fairly long label that must wrap onto several lines"
    hor = _labels([words, "b"])
    out = draw_grid_annotations(grid, W, H, hor, _labels([""]))
    assert len(hor[0]) >= 3 and all(line.text for line in hor[0])  # rewritten in place into its lines (as A1111)
    assert out.height - H > 2 * (short.height - H)  # the top band grows with them
    band = _px(out.crop((0, 0, out.width, out.height - H)))
    dark = _dark_columns(band[:, :W])
    assert len(dark) and dark.min() >= 0 and dark.max() < W  # the first column's text stays over it
    _assert_cells_at(out, cells, cols=2, left=0, top=out.height - H)


def test_long_word_shrinks_to_fit():
    cells = _cells(2)
    grid = image_grid(cells, rows=1)
    out = draw_grid_annotations(grid, W, H, _labels(["Supercalifragilistic", "b"]), _labels([""]))
    band = _px(out.crop((0, 0, out.width, out.height - H)))
    dark = _dark_columns(band)
    first = dark[dark < W + 2]
    assert first.min() >= 0 and first.max() <= W  # shrunk to the cell width (1 px anti-aliasing slack)
    assert not ((dark > W) & (dark < W + W // 2 - 8)).any()  # nothing spilled toward "b"


@pytest.mark.parametrize("text", ["x" * 500, ("word " * 100).strip()])
def test_500_char_labels(text):
    cells = _cells(4)
    grid = image_grid(cells, rows=2)
    out = draw_grid_annotations(grid, W, H, _labels([text, "b"]), _labels([text, "d"]))
    pad_left = W * 3 // 4
    pad_top = out.height - 2 * H
    assert out.width == 2 * W + pad_left
    _assert_cells_at(out, cells, cols=2, left=pad_left, top=pad_top)  # no label paints over a picture
    band = _px(out.crop((pad_left, 0, out.width, pad_top)))
    assert (band == 255).all(axis=2).mean() > 0.3 and band.min() < 128


# --- prompt matrix ------------------------------------------------------------------------------------------------


def test_prompt_matrix_layout_and_inactive_grey():
    # 3 optional parts: A1111 puts ceil(3/2) = 2 on the columns (4 of them) and 1 on the rows (2).
    cells = _cells(8)
    grid = image_grid(cells, rows=2)
    out = draw_prompt_matrix(grid, W, H, ["base", "cat", "dog", "hat"])
    pad_left = W * 3 // 4
    pad_top = out.height - 2 * H
    assert out.width == 4 * W + pad_left
    _assert_cells_at(out, cells, cols=4, left=pad_left, top=pad_top)

    def column_band(c):
        return _px(out.crop((pad_left + c * W, 0, pad_left + (c + 1) * W, pad_top)))

    # Column 0: both parts off -> grey text with a solid grey strike-through, nothing darker.
    off = column_band(0)
    assert off.min() == 153
    assert ((off == 153).all(axis=2).sum(axis=1) >= 8).any()  # a horizontal grey line
    # Column 3: both parts on -> black text.
    assert column_band(3).min() < 60
    # Row 0 ("hat" off) grey, row 1 on.
    assert _px(out.crop((0, pad_top, pad_left, pad_top + H))).min() == 153
    assert _px(out.crop((0, pad_top + H, pad_left, pad_top + 2 * H))).min() < 60
