"""The img2img tab: the editor value → (init image, mask) conversion, and the `/img2img` endpoint driven over
HTTP with gradio_client (the tiny model, 64×64, few steps)."""

import numpy as np
import pytest
from PIL import Image

from webui.engine.errors import UserError
from webui.engine.infotext import parse_infotext
from webui.ui.img2img import (
    INPAINT,
    INPAINT_SKETCH,
    SKETCH,
    editor_to_init_mask,
    init_and_mask,
    mode_name,
    resize_label,
)


def noise(size=(64, 64), seed=0, mode="RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}[mode]
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(a, mode)


def layer_with_box(size, box, colour=(255, 255, 255, 255)) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste(Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), colour), box[:2])
    return layer


def box_mask(size, box) -> np.ndarray:
    a = np.zeros((size[1], size[0]), dtype=bool)
    a[box[1]:box[3], box[0]:box[2]] = True
    return a


# --- editor value → (init, mask) ------------------------------------------------------------------------


def test_inpaint_background_is_the_init_and_drawn_alpha_the_mask():
    background = noise()
    layer = layer_with_box((64, 64), (10, 20, 30, 40), (204, 50, 50, 255))  # the brush colour is irrelevant
    faint = layer_with_box((64, 64), (40, 0, 64, 8), (255, 255, 255, 100))  # A1111 rounds alpha ≤ 128 away
    composite = background.convert("RGBA")
    composite.alpha_composite(layer)
    init, mask = editor_to_init_mask(INPAINT, {"background": background, "layers": [layer, faint],
                                               "composite": composite})
    assert init is background
    assert mask.mode == "L" and mask.size == (64, 64)
    assert np.array_equal(np.asarray(mask) == 255, box_mask((64, 64), (10, 20, 30, 40)))
    assert set(np.unique(np.asarray(mask))) == {0, 255}


def test_inpaint_layers_are_united_and_fitted_to_the_background():
    background = noise((64, 48))
    small = layer_with_box((32, 24), (0, 0, 8, 8))  # a canvas at half size: stretched onto the background
    other = layer_with_box((64, 48), (40, 30, 50, 40))
    _, mask = editor_to_init_mask(INPAINT, {"background": background, "layers": [small, other], "composite": None})
    expected = box_mask((64, 48), (0, 0, 16, 16)) | box_mask((64, 48), (40, 30, 50, 40))
    assert np.array_equal(np.asarray(mask) == 255, expected)


def test_inpaint_with_nothing_drawn_is_an_empty_mask_and_without_image_an_error():
    _, mask = editor_to_init_mask(INPAINT, {"background": noise(), "layers": [], "composite": None})
    assert mask.getbbox() is None
    with pytest.raises(UserError, match="Inpaint: no image"):
        editor_to_init_mask(INPAINT, {"background": None, "layers": [], "composite": None})
    with pytest.raises(UserError, match="Inpaint: no image"):
        editor_to_init_mask(INPAINT, None)


def test_inpaint_sketch_mask_is_the_changed_pixels_and_init_the_sketch():
    original = noise(mode="RGBA")
    original.putalpha(255)
    box = (8, 8, 24, 40)
    sketched = original.copy()
    sketched.alpha_composite(layer_with_box((64, 64), box, (0, 255, 0, 255)))
    init, mask = editor_to_init_mask(INPAINT_SKETCH, {"background": original, "layers": [], "composite": sketched})
    assert np.array_equal(np.asarray(mask) == 255, box_mask((64, 64), box))
    assert np.asarray(mask)[~box_mask((64, 64), box)].max() == 0
    assert np.array_equal(np.asarray(init), np.asarray(sketched))  # no blur: the sketch itself


def test_inpaint_sketch_mask_transparency_dims_the_mask_and_the_colour():
    original = Image.new("RGBA", (32, 32), (0, 0, 255, 255))
    sketched = original.copy()
    sketched.alpha_composite(layer_with_box((32, 32), (0, 0, 16, 32), (255, 0, 0, 255)))
    init, mask = editor_to_init_mask(INPAINT_SKETCH, {"background": original, "layers": [], "composite": sketched},
                                     mask_alpha=50)
    m = np.asarray(mask)
    assert 126 <= m[5, 5] <= 128 and m[5, 25] == 0  # A1111: Brightness(mask).enhance(1 - 50/100)
    r, g, b, _ = np.asarray(init)[5, 5].astype(int)
    assert 126 <= r <= 129 and 126 <= b <= 129 and g == 0  # half the red sketch over the blue original
    assert tuple(np.asarray(init)[5, 25]) == (0, 0, 255, 255)
    _, full = editor_to_init_mask(INPAINT_SKETCH, {"background": original, "layers": [], "composite": sketched},
                                  mask_alpha=100)
    assert full.getbbox() is None


def test_inpaint_sketch_blur_softens_the_pasted_sketch():
    original = Image.new("RGBA", (48, 48), (0, 0, 0, 255))
    sketched = original.copy()
    sketched.alpha_composite(layer_with_box((48, 48), (16, 16, 32, 32), (255, 255, 255, 255)))
    init, mask = editor_to_init_mask(INPAINT_SKETCH, {"background": original, "layers": [], "composite": sketched},
                                     mask_blur=4)
    assert np.array_equal(np.asarray(mask) == 255, box_mask((48, 48), (16, 16, 32, 32)))  # the mask itself unblurred
    grey = np.asarray(init.convert("L"))
    assert 0 < grey[16, 16] < 255 and grey[24, 24] > 200 and grey[0, 0] == 0


def test_inpaint_sketch_ignores_what_the_canvas_left_under_transparent_pixels():
    original = Image.new("RGBA", (16, 16), (10, 20, 30, 0))  # fully transparent upload
    sketched = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # the canvas zeroes colour under alpha 0
    sketched.alpha_composite(layer_with_box((16, 16), (0, 0, 4, 4), (255, 0, 0, 255)))
    _, mask = editor_to_init_mask(INPAINT_SKETCH, {"background": original, "layers": [], "composite": sketched})
    assert np.array_equal(np.asarray(mask) == 255, box_mask((16, 16), (0, 0, 4, 4)))


def test_inpaint_sketch_without_composite_draws_the_layers_over_the_background():
    original = noise((32, 32), mode="RGB")
    layer = layer_with_box((32, 32), (4, 4, 12, 12), (0, 255, 0, 255))
    init, mask = editor_to_init_mask(INPAINT_SKETCH, {"background": original, "layers": [layer], "composite": None})
    assert np.array_equal(np.asarray(mask) == 255, box_mask((32, 32), (4, 4, 12, 12)))
    assert tuple(np.asarray(init)[6, 6]) == (0, 255, 0, 255)


def test_sketch_init_is_the_composite_and_there_is_no_mask():
    background = noise((32, 32))
    composite = background.convert("RGBA")
    composite.alpha_composite(layer_with_box((32, 32), (0, 0, 8, 8), (255, 0, 0, 255)))
    init, mask = editor_to_init_mask(SKETCH, {"background": background, "layers": [], "composite": composite})
    assert init is composite and mask is None
    # An API client may send only background + layers: they are flattened the same way.
    layer = layer_with_box((32, 32), (0, 0, 8, 8), (255, 0, 0, 255))
    init, mask = editor_to_init_mask(SKETCH, {"background": background, "layers": [layer], "composite": None})
    assert np.array_equal(np.asarray(init), np.asarray(composite)) and mask is None
    # numpy arrays (gradio's type="numpy") are accepted too
    init, _ = editor_to_init_mask(SKETCH, {"background": None, "layers": [], "composite": np.asarray(composite)})
    assert np.array_equal(np.asarray(init), np.asarray(composite))
    with pytest.raises(UserError, match="Sketch: no image"):
        editor_to_init_mask(SKETCH, {"background": None, "layers": [], "composite": None})


def test_modes_by_name_or_index_and_inpaint_upload_inputs():
    assert mode_name(0) == "img2img" and mode_name("4") == "Inpaint upload" and mode_name("inpaint SKETCH") == \
        "Inpaint sketch"
    with pytest.raises(UserError, match="Unknown img2img mode"):
        mode_name("Batch")
    image, mask = noise((16, 16)), Image.new("L", (16, 16), 255)
    assert init_and_mask("Inpaint upload", inpaint_image=image, mask=mask) == (image, mask)
    assert init_and_mask("Inpaint upload", init_image=image, mask=mask) == (image, mask)  # the API's way
    with pytest.raises(UserError, match="no mask"):
        init_and_mask("Inpaint upload", init_image=image)
    with pytest.raises(UserError, match="no init image"):
        init_and_mask("img2img", init_image=None, inpaint_image=image)
    assert resize_label((100, 60), 0.5) == "resize: from 100x60 to 48x24"
    assert resize_label(None, 2) == "resize: no image selected"


# --- over gradio_client ---------------------------------------------------------------------------------

BASE = {"mask": None, "prompt": "a red ball", "negative_prompt": "blurry", "sampler_name": "Euler",
        "scheduler": "Automatic", "steps": 4, "width": 64, "height": 64, "n_iter": 1, "batch_size": 1, "cfg_scale": 7,
        "seed": 42, "denoising_strength": 0.75, "resize_mode": "Just resize", "mask_blur": 4,
        "mask_mode": "Inpaint masked", "masked_content": "original", "inpaint_area": "Whole picture",
        "inpaint_full_res_padding": 32}


def run(url, **kw):
    from gradio_client import Client

    return Client(url, verbose=False).predict(**{**BASE, **kw}, api_name="/img2img")


def saved(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_img2img_upload_returns_an_image_with_infotext(served, data_dir):
    noise().save(data_dir / "init.png")
    gallery, info = run(served, mode="img2img", init_image=saved(data_dir / "init.png"), denoising_strength=0.5)
    assert len(gallery) == 1
    image = Image.open(gallery[0]["image"])
    assert image.format == "PNG" and image.size == (64, 64)
    assert "Denoising strength: 0.5" in info and "Mask blur" not in info
    params = parse_infotext(image.info["parameters"])
    assert (params.prompt, params.denoising_strength, params.seed) == ("a red ball", 0.5, 42)
    assert [p.name for p in (data_dir / "outputs" / "img2img-images").rglob("*.png")] == ["00000-42.png"]


def test_missing_init_image_is_an_error_message(served, data_dir):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="no init image"):
        run(served, mode="img2img", init_image=None)
    with pytest.raises(AppError, match="Inpaint: no image"):
        run(served, mode="Inpaint", init_image=None)
    with pytest.raises(AppError, match="Inpaint upload: no image"):
        run(served, mode="Inpaint upload", init_image=None, inpaint_image=None)
    noise().save(data_dir / "init.png")
    with pytest.raises(AppError, match="Inpaint upload: no mask"):
        run(served, mode="Inpaint upload", init_image=saved(data_dir / "init.png"))
    gallery, _ = run(served, mode="img2img", init_image=saved(data_dir / "init.png"))  # the app still works
    assert len(gallery) == 1


def test_inpaint_upload_keeps_the_unmasked_pixels(served, data_dir):
    original = noise(seed=3)
    original.save(data_dir / "image.png")
    box = (16, 16, 48, 40)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, box)
    mask.save(data_dir / "mask.png")
    gallery, info = run(served, mode="Inpaint upload", init_image=saved(data_dir / "image.png"),
                        mask=saved(data_dir / "mask.png"), mask_blur=0, denoising_strength=1.0)
    out = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    inside = box_mask((64, 64), box)
    assert np.array_equal(out[~inside], np.asarray(original)[~inside])
    assert np.abs(out[inside].astype(int) - np.asarray(original)[inside]).mean() > 10
    assert "Mask blur" not in info and "Inpaint area" not in info and "Denoising strength: 1," in info

    # The same through the "Inpaint upload" sub-tab's own image input, Only masked, with mask blur
    gallery, info = run(served, mode="Inpaint upload", init_image=None, inpaint_image=saved(data_dir / "image.png"),
                        mask=saved(data_dir / "mask.png"), mask_blur=4, inpaint_area="Only masked",
                        inpaint_full_res_padding=8, masked_content="latent noise", mask_mode="Inpaint not masked")
    assert "Mask blur: 4" in info and "Inpaint area: Only masked" in info and "Masked area padding: 8" in info
    assert "Masked content: latent noise" in info and "Mask mode: Inpaint not masked" in info
    assert Image.open(gallery[0]["image"]).size == (64, 64)


def test_inpaint_editor_over_gradio_client(served, data_dir):
    """The ImageEditor's wire format: {"background", "layers", "composite"} as files."""
    original = noise(seed=5)
    original.save(data_dir / "bg.png")
    box = (8, 8, 40, 24)
    layer_with_box((64, 64), box).save(data_dir / "layer.png")
    editor = {"background": saved(data_dir / "bg.png"), "layers": [saved(data_dir / "layer.png")],
              "composite": None}
    gallery, info = run(served, mode="Inpaint", init_image=None, inpaint=editor, mask_blur=0, denoising_strength=1.0)
    out = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    inside = box_mask((64, 64), box)
    assert np.array_equal(out[~inside], np.asarray(original)[~inside])
    assert np.abs(out[inside].astype(int) - np.asarray(original)[inside]).mean() > 10
    # nothing drawn: the engine's warning is shown, the image comes back unchanged
    empty = {"background": saved(data_dir / "bg.png"), "layers": [], "composite": None}
    gallery, info = run(served, mode="Inpaint", init_image=None, inpaint=empty, mask_blur=0)
    assert "Warning: the mask is empty" in info


def test_rgba_and_16bit_uploads(served, data_dir):
    # RGBA: transparent pixels become the background colour (white), as A1111 flattens them
    rgba = noise(seed=7, mode="RGBA")
    a = np.asarray(rgba).copy()
    a[..., 3] = 255
    a[:, :32, 3] = 0
    Image.fromarray(a, "RGBA").save(data_dir / "rgba.png")
    keep = Image.new("L", (64, 64), 0)
    keep.paste(255, (40, 40, 64, 64))
    keep.save(data_dir / "mask.png")
    gallery, _ = run(served, mode="Inpaint upload", init_image=saved(data_dir / "rgba.png"),
                     mask=saved(data_dir / "mask.png"), mask_blur=0)
    out = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    assert (out[:40, :32] == 255).all() and np.array_equal(out[:40, 32:], a[:40, 32:, :3])

    # 16-bit greyscale: scaled to 8 bits, not clipped to white
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(data_dir / "deep.png")
    assert Image.open(data_dir / "deep.png").mode.startswith("I")
    gallery, _ = run(served, mode="Inpaint upload", init_image=saved(data_dir / "deep.png"),
                        mask=saved(data_dir / "mask.png"), mask_blur=0)
    out = np.asarray(Image.open(gallery[0]["image"]).convert("RGB")).astype(int)
    expected = np.rint(ramp / 257.0).astype(int)
    assert np.abs(out[:40, :, 0] - expected[:40]).max() <= 1 and (out[:40, :, 0] == out[:40, :, 2]).all()
    gallery, _ = run(served, mode="img2img", init_image=saved(data_dir / "deep.png"))
    assert Image.open(gallery[0]["image"]).size == (64, 64)


def test_resize_by_scales_the_init_image_size(served, data_dir):
    noise((128, 200)).save(data_dir / "big.png")
    gallery, info = run(served, mode="img2img", init_image=saved(data_dir / "big.png"), size_mode="Resize by",
                        scale=0.5, width=512, height=512)
    assert Image.open(gallery[0]["image"]).size == (64, 96) and "Size: 64x96" in info  # 100 → 96: a multiple of 8
