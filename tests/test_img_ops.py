"""Input image normalisation and A1111's resize modes (webui/engine/img_ops.py)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from webui.engine.errors import UserError
from webui.engine.imaging.ops import (
    RESIZE_MODES,
    InvalidImage,
    normalize_image,
    open_image,
    resize_image,
    resize_mode_index,
    scale_to_size,
)

BIG = 10_000_000


def random_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(int)


# --- resize modes --------------------------------------------------------------------------------


def test_mode_names_in_a1111_order():
    assert RESIZE_MODES == ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
    for i, name in enumerate(RESIZE_MODES):
        assert resize_mode_index(name) == i == resize_mode_index(i) == resize_mode_index(str(i))
    assert resize_mode_index("crop and resize") == 1


@pytest.mark.parametrize("bad", [4, -1, "Stretch", 1.0, True])
def test_bad_mode_is_a_user_error(bad):
    with pytest.raises(UserError):
        resize_mode_index(bad)


@pytest.mark.parametrize("mode", range(4))
@pytest.mark.parametrize("src", [(200, 100), (100, 200), (64, 64), (300, 97)])
def test_output_size_and_mode(mode, src):
    out = resize_image(mode, random_rgb(*src), 128, 96)
    assert out.size == (128, 96) and out.mode == "RGB"
    assert resize_image(mode, random_rgb(*src).convert("L"), 40, 48).mode == "L"


def test_just_resize_stretches():
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    img.paste((0, 0, 255), (50, 0, 100, 50))
    out = arr(resize_image(0, img, 64, 128))
    assert (out[:, :28] == [255, 0, 0]).all() and (out[:, 36:] == [0, 0, 255]).all()


def test_latent_upscale_mode_is_a_pixel_stretch_here():
    img = random_rgb(90, 40)
    assert (arr(resize_image(3, img, 64, 64)) == arr(resize_image(0, img, 64, 64))).all()
    assert (arr(resize_image("Just resize (latent upscale)", img, 64, 64)) == arr(resize_image(0, img, 64, 64))).all()


def test_crop_keeps_the_centre_wide():
    img = random_rgb(200, 100)
    # the height already fits: no scaling, the middle 100 columns are kept
    assert (arr(resize_image(1, img, 100, 100)) == arr(img)[:, 50:150]).all()
    assert (arr(resize_image("Crop and resize", img, 100, 100)) == arr(img)[:, 50:150]).all()


def test_crop_keeps_the_centre_tall():
    img = random_rgb(100, 200)
    assert (arr(resize_image(1, img, 100, 100)) == arr(img)[50:150]).all()


def test_crop_scales_to_cover_then_centres():
    img = random_rgb(400, 200)
    scaled = arr(img.resize((200, 100), Image.Resampling.LANCZOS))
    assert (arr(resize_image(1, img, 100, 100)) == scaled[:, 50:150]).all()
    # A1111's integer geometry: 300x97 into 128x96 covers at 296x96 (300*96//97) and is offset by -84
    img = random_rgb(300, 97)
    scaled = arr(img.resize((296, 96), Image.Resampling.LANCZOS))
    assert (arr(resize_image(1, img, 128, 96)) == scaled[:, 84:212]).all()


def with_flat_edges(img: Image.Image, axis: int) -> Image.Image:
    """Copy the outermost row (axis 0) / column (axis 1) three deep, so the edge colour is unambiguous."""
    a = np.asarray(img).copy()
    if axis == 0:
        a[:3], a[-3:] = a[0], a[-1]
    else:
        a[:, :3], a[:, -3:] = a[:, :1], a[:, -1:]
    return Image.fromarray(a, img.mode)


def test_fill_bands_above_and_below_repeat_the_edge_rows():
    img = with_flat_edges(random_rgb(200, 100), axis=0)
    out = arr(resize_image(2, img, 200, 200))
    a = arr(img)
    assert (out[50:150] == a).all()  # centred, unscaled
    assert (out[:50] == a[0]).all()  # top band: the first row stretched
    assert (out[150:] == a[-1]).all()  # bottom band: the last row


def test_fill_bands_left_and_right_repeat_the_edge_columns():
    img = with_flat_edges(random_rgb(100, 200), axis=1)
    out = arr(resize_image(2, img, 200, 200))
    a = arr(img)
    assert (out[:, 50:150] == a).all()
    assert (out[:, :50] == a[:, :1]).all()
    assert (out[:, 150:] == a[:, -1:]).all()


def test_fill_bands_are_uniform_and_near_the_edge():
    # A1111 stretches a zero-height box at the edge: PIL samples it bicubically, so with a busy edge the
    # band is the edge row slightly extrapolated, the same on every band row.
    img = random_rgb(200, 100, seed=3)
    out = arr(resize_image(2, img, 200, 160))
    a = arr(img)
    assert (out[:30] == out[0]).all() and (out[130:] == out[-1]).all()
    assert np.corrcoef(out[0].ravel(), a[0].ravel())[0, 1] > 0.9


def test_fill_scaled_geometry():
    # 300x100 into 128x128: fits at 128x42 (100*128//300), pasted at y = 64 - 21 = 43, bands of 43 rows
    stripes = np.random.default_rng(1).integers(0, 256, (1, 300, 3), dtype=np.uint8).repeat(100, axis=0)
    img = Image.fromarray(stripes, "RGB")
    scaled = arr(img.resize((128, 42), Image.Resampling.LANCZOS))
    out = arr(resize_image("Resize and fill", img, 128, 128))
    assert (out[43:85] == scaled).all()
    assert (out[:43] == scaled[0]).all() and (out[85:] == scaled[-1]).all()


def test_same_aspect_modes_agree():
    img = random_rgb(64, 32)
    a = arr(resize_image(0, img, 128, 64))
    assert (arr(resize_image(1, img, 128, 64)) == a).all() and (arr(resize_image(2, img, 128, 64)) == a).all()


# --- resize by -----------------------------------------------------------------------------------


def test_scale_to_size():
    assert scale_to_size(512, 768, 1.5) == (768, 1152)
    assert scale_to_size(500, 333, 1.0) == (496, 328)  # rounded down to a multiple of 8
    assert scale_to_size(500, 333, 1.0, multiple=1) == (500, 333)  # A1111's raw int(w * scale)
    assert scale_to_size(333, 333, 0.5, multiple=1) == (166, 166)  # truncated, not rounded
    assert scale_to_size(100, 100, 0.05) == (8, 8)


# --- normalisation -------------------------------------------------------------------------------


def test_rgba_transparent_becomes_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 0, 128))
    out = normalize_image(img, BIG)
    assert out.mode == "RGB" and out.size == (4, 4)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert all(abs(c - 127) <= 1 for c in out.getpixel((1, 0)))  # half-transparent black over white
    assert out.getpixel((2, 2)) == (255, 0, 0)


def test_background_colour_is_configurable():
    img = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert normalize_image(img, BIG, background="#102030").getpixel((0, 0)) == (16, 32, 48)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_palette_with_transparency(as_bytes):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putpixel((0, 0), 0)
    img.info["transparency"] = bytes([0, 255, 255]) if as_bytes else 0
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out = open_image(buf.getvalue(), BIG)
    assert out.getpixel((0, 0)) == (255, 255, 255)  # the transparent index is white, not black
    assert out.getpixel((1, 1)) == (0, 255, 0)


def test_la_flattened():
    img = Image.new("LA", (2, 1), (50, 255))
    img.putpixel((1, 0), (0, 0))
    out = normalize_image(img, BIG)
    assert out.getpixel((0, 0)) == (50, 50, 50) and out.getpixel((1, 0)) == (255, 255, 255)


def test_16bit_gradient_uses_the_full_range():
    ramp = np.linspace(0, 65535, 300).round().astype(np.uint16)[None].repeat(3, axis=0)
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    row = arr(normalize_image(img, BIG))[1, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all() and len(set(row.tolist())) > 200  # monotonic, not clipped to white
    assert abs(row[150] - 128) <= 1


def test_16bit_png_round_trip():
    ramp = (np.arange(256, dtype=np.uint16) * 257)[None]
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    out = arr(open_image(buf.getvalue(), BIG))
    assert (out[0, :, 0] == np.arange(256)).all()


def test_int32_modes():
    img16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32), "I")
    assert arr(normalize_image(img16, BIG))[0, :, 0].tolist() == [0, 128, 255]
    img8 = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), "I")
    assert arr(normalize_image(img8, BIG))[0, :, 0].tolist() == [0, 100, 255]


def test_float_mode():
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert arr(normalize_image(img, BIG))[0, :, 0].tolist() == [0, 128, 255]


def test_grey_and_bilevel():
    out = normalize_image(Image.new("L", (3, 2), 77), BIG)
    assert out.mode == "RGB" and out.getpixel((2, 1)) == (77, 77, 77)
    one = Image.new("1", (2, 1), 0)
    one.putpixel((1, 0), 1)
    out = normalize_image(one, BIG)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)


def test_cmyk():
    img = Image.new("CMYK", (2, 1), (255, 0, 0, 0))  # cyan
    img.putpixel((1, 0), (0, 0, 0, 0))  # paper white
    out = normalize_image(img, BIG)
    assert out.getpixel((0, 0)) == (0, 255, 255) and out.getpixel((1, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (2, 1), (255, 0, 0))
    img.putpixel((1, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    out = open_image(buf.getvalue(), BIG)
    assert out.size == (1, 2)
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((0, 1)) == (0, 0, 255)


def test_output_is_independent_rgb():
    img = random_rgb(5, 5)
    out = normalize_image(img, BIG)
    assert out.mode == "RGB" and (arr(out) == arr(img)).all()


def test_oversize_is_refused_with_its_size():
    with pytest.raises(InvalidImage) as e:
        normalize_image(Image.new("RGB", (100, 60)), max_pixels=5000)
    assert isinstance(e.value, UserError)
    assert "100x60" in str(e.value) and "5,000" in str(e.value)
    normalize_image(Image.new("RGB", (100, 50)), max_pixels=5000)  # exactly at the limit is fine


def test_oversize_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("RGB", (400, 300)).save(buf, "PNG")
    truncated = buf.getvalue()[:60]  # header says 400x300, no pixel data
    with pytest.raises(InvalidImage, match="400x300"):
        open_image(truncated, max_pixels=1000)


@pytest.mark.parametrize("data", [b"not an image at all", b""])
def test_garbage_is_refused(data):
    with pytest.raises(InvalidImage, match="decode"):
        open_image(data, BIG)


def test_truncated_image_is_refused():
    buf = io.BytesIO()
    random_rgb(64, 64).save(buf, "PNG")
    img = Image.open(io.BytesIO(buf.getvalue()[: len(buf.getvalue()) // 2]))
    with pytest.raises(InvalidImage, match="decode"):
        normalize_image(img, BIG)
