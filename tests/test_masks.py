"""Inpainting masks: preparation, "Only masked" crop region, "fill", compositing (webui/engine/masks.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from webui.engine.imaging.masks import (
    blur_mask,
    composite,
    crop_to_region,
    expand_crop_region,
    fill,
    get_crop_region,
    is_empty,
    latent_mask,
    mask_for_overlay,
    mask_to_l,
    prepare_mask,
)


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(int)


def random_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


# --- mask_to_l -----------------------------------------------------------------------------------


def test_sketch_alpha_is_the_mask():
    # a browser sketch: transparent background, opaque black strokes -> the strokes are the mask
    sketch = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    sketch.putpixel((1, 0), (0, 0, 0, 255))
    sketch.putpixel((2, 0), (0, 0, 0, 129))
    sketch.putpixel((3, 0), (0, 0, 0, 128))
    assert list(mask_to_l(sketch).getdata()) == [0, 255, 255, 0]  # alpha > 128
    assert list(mask_to_l(sketch, mask_round=False).getdata()) == [0, 255, 129, 128]


def test_opaque_rgba_and_rgb_are_greyscale():
    img = Image.new("RGBA", (2, 1), (255, 255, 255, 255))
    img.putpixel((1, 0), (0, 0, 0, 255))
    assert list(mask_to_l(img).getdata()) == [255, 0]
    assert list(mask_to_l(img.convert("RGB")).getdata()) == [255, 0]
    assert mask_to_l(Image.new("1", (2, 2), 1)).getextrema() == (255, 255)


def test_16bit_mask_is_scaled():
    m = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert list(mask_to_l(m).getdata()) == [0, 255]


# --- prepare_mask --------------------------------------------------------------------------------


def test_blur_zero_keeps_a_binary_mask_exactly():
    m = box_mask((64, 48), (10, 12, 30, 40))
    out = prepare_mask(m, (64, 48), 0, 0, False)
    assert out.mode == "L" and (arr(out) == arr(m)).all()


def test_invert():
    m = box_mask((20, 20), (5, 5, 10, 10))
    assert (arr(prepare_mask(m, (20, 20), 0, 0, True)) == 255 - arr(m)).all()


def test_mismatched_mask_is_stretched_onto_the_image():
    m = box_mask((50, 25), (0, 0, 25, 25))  # left half
    out = arr(prepare_mask(m, (200, 100), 0, 0, False))
    assert out.shape == (100, 200)
    assert (out[:, :80] >= 250).all() and (out[:, 120:] <= 5).all()  # LANCZOS rings a little at the edge
    assert (out[:, 99] > 128).all() and (out[:, 100] < 128).all()


def test_blur_x_only_blurs_horizontally_with_a1111_kernel_size():
    m = Image.new("L", (100, 20), 0)
    m.paste(255, (0, 0, 50, 20))  # white left half, edge between x=49 and x=50
    out = arr(prepare_mask(m, (100, 20), 4, 0, False))
    assert (out == out[0]).all()  # no vertical blur: every row the same
    row = out[0]
    # kernel 2*int(2.5*4 + 0.5) + 1 = 21 taps, sigma 4: reaches exactly 10 pixels
    assert row[59] == 1 and row[60] == 0 and row[40] == 254 and row[39] == 255
    assert 120 <= row[49] <= 140 and 115 <= row[50] <= 135
    assert (np.diff(row) <= 0).all()


def test_blur_y_only_blurs_vertically():
    m = Image.new("L", (10, 60), 0)
    m.paste(255, (0, 30, 10, 60))
    out = arr(prepare_mask(m, (10, 60), 0, 2, False))
    assert (out.T == out[:, 0]).all()  # every column the same
    assert out[0, 0] == 0 and out[-1, 0] == 255 and 0 < out[29, 0] < 255


# Expected values below were produced by opencv-python 5.0's cv2.GaussianBlur with A1111's arguments
# (ksize (2*int(2.5*blur + 0.5) + 1, 1) then (1, ...), sigma = blur).


def test_blur_is_bit_exact_with_opencv_1d():
    m = Image.new("L", (60, 1), 0)
    m.paste(255, (20, 0, 40, 1))
    assert list(blur_mask(m, 8, 0).getdata()) == [
        2, 1, 2, 4, 5, 8, 10, 14, 18, 23, 29, 36, 44, 52, 62, 73, 84, 96, 109, 122, 132, 145, 157, 167, 177, 185,
        193, 197, 201, 203, 203, 201, 197, 193, 185, 177, 167, 157, 145, 132, 122, 109, 96, 84, 73, 62, 52, 44, 36,
        29, 23, 18, 14, 10, 8, 5, 4, 2, 1, 2]


def test_blur_is_bit_exact_with_opencv_2d():
    m = Image.new("L", (9, 9), 0)
    m.putpixel((4, 4), 255)
    m.paste(255, (0, 0, 3, 1))
    assert arr(blur_mask(m, 2, 2)).tolist() == [
        [42, 39, 32, 23, 14, 8, 4, 1, 1], [37, 35, 29, 21, 14, 8, 4, 2, 1], [26, 25, 22, 18, 13, 9, 5, 3, 2],
        [16, 16, 15, 15, 13, 10, 6, 3, 2], [8, 9, 10, 12, 12, 10, 7, 4, 3], [4, 5, 7, 9, 10, 8, 6, 3, 2],
        [2, 2, 4, 5, 6, 5, 4, 2, 2], [1, 1, 2, 3, 4, 3, 2, 1, 1], [1, 1, 2, 2, 3, 2, 2, 1, 1]]


def test_blur_border_is_reflect_101():
    # OpenCV's default border mirrors without repeating the edge pixel
    m = Image.new("L", (30, 1), 0)
    m.putpixel((0, 0), 255)
    assert list(blur_mask(m, 2, 0).getdata())[:8] == [52, 45, 31, 17, 7, 2, 0, 0]
    m = Image.new("L", (30, 1), 0)
    m.putpixel((5, 0), 255)  # its mirror image at x = -5 adds to x = 0
    assert list(blur_mask(m, 2, 0).getdata())[:12] == [4, 7, 17, 31, 45, 52, 45, 31, 17, 7, 2, 0]


def test_is_empty():
    assert is_empty(Image.new("L", (8, 8), 0))
    assert not is_empty(box_mask((8, 8), (3, 3, 4, 4)))


# --- crop region ---------------------------------------------------------------------------------


def test_crop_region_bbox_padding_and_clamp():
    m = box_mask((100, 80), (40, 30, 50, 40))
    assert get_crop_region(m) == (40, 30, 50, 40)
    assert get_crop_region(m, 8) == (32, 22, 58, 48)
    assert get_crop_region(m, 45) == (0, 0, 95, 80)


def test_crop_region_of_blank_mask_is_none():
    assert get_crop_region(Image.new("L", (16, 16)), 32) is None


def test_expand_keeps_the_processing_aspect():
    # a 10x10 mask region for a 2:1 processing size grows to 20x10 around its centre
    assert expand_crop_region((40, 30, 50, 40), 512, 256, 100, 80) == (35, 30, 55, 40)
    # 1:2 grows the height
    assert expand_crop_region((40, 30, 50, 40), 256, 512, 100, 80) == (40, 25, 50, 45)
    # already the right shape: unchanged
    assert expand_crop_region((10, 10, 74, 42), 512, 256, 100, 80) == (10, 10, 74, 42)


def test_expand_slides_back_inside_the_image():
    assert expand_crop_region((90, 30, 100, 40), 512, 256, 100, 80) == (80, 30, 100, 40)
    assert expand_crop_region((0, 30, 10, 40), 512, 256, 100, 80) == (0, 30, 20, 40)
    assert expand_crop_region((40, 0, 50, 10), 256, 512, 100, 80) == (40, 0, 50, 20)


def test_expand_clamps_when_the_image_is_too_small():
    assert expand_crop_region((0, 10, 100, 20), 512, 512, 100, 40) == (0, 0, 100, 40)


@given(st.integers(1, 200), st.integers(1, 200), st.data())
def test_expand_properties(iw, ih, data):
    x1 = data.draw(st.integers(0, iw - 1))
    x2 = data.draw(st.integers(x1 + 1, iw))
    y1 = data.draw(st.integers(0, ih - 1))
    y2 = data.draw(st.integers(y1 + 1, ih))
    tw, th = data.draw(st.sampled_from([(512, 512), (768, 512), (512, 768), (1024, 576), (64, 256)]))
    ex1, ey1, ex2, ey2 = expand_crop_region((x1, y1, x2, y2), tw, th, iw, ih)
    assert 0 <= ex1 <= x1 and x2 <= ex2 <= iw and 0 <= ey1 <= y1 and y2 <= ey2 <= ih  # inside, contains
    w, h = ex2 - ex1, ey2 - ey1
    if w < iw and h < ih:  # not clamped by the image: the aspect is kept to the pixel
        assert abs(w * th - h * tw) <= max(tw, th)


def test_crop_to_region_fits_processing_size():
    img = random_rgb(100, 80)
    out = crop_to_region(img, (20, 10, 60, 50), 64, 64)
    assert out.size == (64, 64)
    assert (arr(out) == arr(img.crop((20, 10, 60, 50)).resize((64, 64), Image.Resampling.LANCZOS))).all()


# --- fill ----------------------------------------------------------------------------------------


def test_fill_replaces_only_the_masked_area():
    img = Image.new("RGB", (64, 64), (0, 160, 0))
    img.paste((255, 0, 255), (20, 20, 40, 40))  # a magenta object to remove
    mask = box_mask((64, 64), (20, 20, 40, 40))
    out = arr(fill(img, mask))
    a = arr(img)
    outside = arr(mask) == 0
    assert (out[outside] == a[outside]).all()
    hole = out[25:35, 25:35]
    assert (np.abs(hole - [0, 160, 0]) <= 8).all()  # filled with the surrounding green


def test_fill_with_a_busy_image():
    img = random_rgb(48, 48, seed=5)
    mask = box_mask((48, 48), (10, 10, 30, 30))
    out, a = arr(fill(img, mask)), arr(img)
    assert (out[arr(mask) == 0] == a[arr(mask) == 0]).all()
    assert (out[12:28, 12:28] != a[12:28, 12:28]).any(axis=-1).mean() > 0.9
    assert out[12:28, 12:28].std() < a.std() / 2  # smooth colours, not the original detail


# --- latent mask ---------------------------------------------------------------------------------


def test_latent_mask():
    m = box_mask((64, 64), (0, 0, 32, 64))
    lm = latent_mask(m, 8, 8)
    assert lm.shape == (8, 8) and lm.dtype == np.float32
    assert (lm[:, :4] == 1).all() and (lm[:, 4:] == 0).all()
    soft = latent_mask(Image.new("L", (64, 64), 100), 8, 8, mask_round=False)
    assert np.allclose(soft, 100 / 255)
    assert (latent_mask(Image.new("L", (64, 64), 100), 8, 8) == 0).all()


# --- composite -----------------------------------------------------------------------------------


def test_overlay_mask_doubles_only_for_whole_picture():
    m = Image.new("L", (2, 1), 100)
    m.putpixel((1, 0), 200)
    assert list(mask_for_overlay(m, only_masked=True).getdata()) == [100, 200]
    assert list(mask_for_overlay(m, only_masked=False).getdata()) == [200, 255]


def test_composite_whole_picture_binary():
    orig, gen = random_rgb(64, 48, 1), random_rgb(64, 48, 2)
    mask = prepare_mask(box_mask((64, 48), (8, 8, 30, 40)), (64, 48), 0, 0, False)
    out, m = arr(composite(orig, gen, mask)), arr(mask)
    assert out.shape == (48, 64, 3)
    assert (out[m == 0] == arr(orig)[m == 0]).all()
    assert (out[m == 255] == arr(gen)[m == 255]).all()


def test_composite_whole_picture_blurred():
    orig, gen = random_rgb(64, 48, 1), random_rgb(64, 48, 2)
    mask = prepare_mask(box_mask((64, 48), (20, 10, 40, 38)), (64, 48), 4, 4, False)
    out, m = arr(composite(orig, gen, mask)), arr(mask)
    assert (m == 0).any() and ((m > 0) & (m < 128)).any()
    assert (out[m == 0] == arr(orig)[m == 0]).all()  # untouched wherever the blurred mask is 0
    assert (out[m >= 128] == arr(gen)[m >= 128]).all()  # A1111 doubles the overlay mask: >= 128 is opaque
    between = (m > 10) & (m < 118)
    expected = (arr(gen) * (2 * m[..., None]) + arr(orig) * (255 - 2 * m[..., None])) / 255
    assert np.abs(out[between] - expected[between]).max() <= 2


def test_composite_only_masked_pastes_into_the_region():
    orig = random_rgb(100, 80, 3)
    mask = prepare_mask(box_mask((100, 80), (40, 30, 50, 40)), (100, 80), 0, 0, False)
    region = expand_crop_region(get_crop_region(mask, 8), 64, 64, 100, 80)
    assert region == (32, 22, 58, 48)
    gen = Image.new("RGB", (64, 64), (10, 200, 30))
    out, m, o = arr(composite(orig, gen, mask, region)), arr(mask), arr(orig)
    assert out.shape == (80, 100, 3)
    assert (out[m == 0] == o[m == 0]).all()  # the original outside the mask, in and out of the region
    assert (out[m == 255] == [10, 200, 30]).all()


def test_composite_only_masked_uses_the_mask_undoubled():
    orig = Image.new("RGB", (32, 32), (0, 0, 0))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(100, (8, 8, 24, 24))
    gen = Image.new("RGB", (64, 64), (255, 255, 255))
    out = arr(composite(orig, gen, mask, (8, 8, 24, 24)))
    assert abs(out[16, 16, 0] - 100) <= 1  # 100/255 of white over black
    assert (out[:8] == 0).all()


def test_composite_only_masked_fits_generated_with_crop_and_resize():
    orig = Image.new("RGB", (40, 20), (0, 0, 0))
    mask = Image.new("L", (40, 20), 255)
    gen = Image.new("RGB", (40, 40), (0, 0, 255))
    gen.paste((255, 0, 0), (0, 10, 40, 30))  # red band in the middle, blue above and below
    out = arr(composite(orig, gen, mask, (0, 0, 40, 20)))
    assert (out == [255, 0, 0]).all()  # the 2:1 region keeps the centre of the square image


def test_composite_rejects_a_size_mismatch_without_region():
    with pytest.raises(ValueError):
        composite(random_rgb(32, 32), random_rgb(16, 16), Image.new("L", (32, 32), 255))
