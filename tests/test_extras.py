"""Extras: A1111's postprocessing upscale with the built-in upscalers, from the engine, the CLI, the API and the UI;
the source's infotext is carried and the postprocessing text added."""
import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from webui.engine.imaging import upscalers
from webui.engine.jobs import extras
from webui.engine.jobs.extras import ExtrasParams

SOURCE_TEXT = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 40x24, Model: tiny"


def picture(size=(40, 24)) -> Image.Image:
    image = Image.new("RGB", size, (20, 40, 200))
    ImageDraw.Draw(image).ellipse([4, 4, size[0] - 10, size[1] - 6], fill=(250, 200, 0))
    return image


def saved_with_text(path, size=(40, 24)):
    meta = PngInfo()
    meta.add_text("parameters", SOURCE_TEXT)
    picture(size).save(path, pnginfo=meta)
    return path


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_scale_by_is_a1111s_upscale_arithmetic():
    """Upscaler.upscale: the upscaler to int(size·scale), then Lanczos to size·scale rounded down to 8."""
    source = picture()
    image, text = extras.run(source, ExtrasParams(upscaler_1="Nearest", upscaling_resize=2.5))
    assert image.size == (96, 56)  # 100x60 rounded down to multiples of 8
    expected = source.resize((100, 60), resample=Image.Resampling.NEAREST).resize((96, 56), Image.Resampling.LANCZOS)
    assert np.array_equal(px(image), px(expected))
    assert text == "Postprocess upscale by: 2.5, Postprocess upscaler: Nearest"


def test_scale_to_covers_then_crops_to_the_size():
    image, text = extras.run(picture(), ExtrasParams(resize_mode=extras.SCALE_TO, upscaling_resize_w=64,
                                                     upscaling_resize_h=64, upscaler_1="Lanczos"))
    assert image.size == (64, 64)
    assert text == "Postprocess upscale to: 64x64, Postprocess upscaler: Lanczos, Postprocess crop to: 64x64" or \
        text == "Postprocess upscale to: 64x64, Postprocess crop to: 64x64, Postprocess upscaler: Lanczos"
    whole, _ = extras.run(picture(), ExtrasParams(resize_mode=extras.SCALE_TO, upscaling_resize_w=64,
                                                  upscaling_resize_h=64, upscaler_1="Lanczos", upscaling_crop=False))
    assert whole.size == (104, 64)  # 40x24 scaled by 64/24 to cover, rounded down to 8


def test_second_upscaler_is_blended_at_its_visibility():
    source = picture()
    first, _ = extras.run(source, ExtrasParams(upscaler_1="Lanczos"))
    second, _ = extras.run(source, ExtrasParams(upscaler_1="Nearest"))
    both, text = extras.run(source, ExtrasParams(upscaler_1="Lanczos", upscaler_2="Nearest",
                                                 extras_upscaler_2_visibility=0.25))
    assert np.array_equal(px(both), px(Image.blend(first, second, 0.25)))
    assert text.endswith("Postprocess upscaler: Lanczos, Postprocess upscaler 2: Nearest")


def test_upscaler_none_leaves_the_picture_and_bad_values_are_refused():
    source = picture()
    same, text = extras.run(source, ExtrasParams())
    assert np.array_equal(px(same), px(source)) and text == ""
    with pytest.raises(ValueError, match="could not find upscaler named 'ESRGAN'"):
        extras.run(source, ExtrasParams(upscaler_1="ESRGAN"))
    with pytest.raises(ValueError, match="upscale factor must be between 1.0 and 8.0"):
        extras.run(source, ExtrasParams(upscaler_1="Lanczos", upscaling_resize=20))


def test_hires_pixel_upscaler_goes_through_the_same_upscaler_code():
    """resize_image with an upscaler: upscale (rounded to 8), then Lanczos to the exact size."""
    source = picture((64, 64))
    out = upscalers.resize_to(source, "Nearest", 100, 100)
    step = source.resize((100, 100), Image.Resampling.NEAREST).resize((96, 96), Image.Resampling.LANCZOS)
    assert np.array_equal(px(out), px(step.resize((100, 100), Image.Resampling.LANCZOS)))
    assert np.array_equal(px(upscalers.resize_to(source, "None", 100, 100)),
                          px(source.resize((100, 100), Image.Resampling.LANCZOS)))


def test_cli_extras_saves_with_the_source_infotext(tmp_path):
    from webui.cli import main
    from webui.engine.infotext import read_png_infotext

    source = saved_with_text(tmp_path / "in.png")
    assert main(["extras", str(source), "--data-dir", str(tmp_path), "--upscaler-1", "Lanczos", "--scale", "2"]) == 0
    [out] = list((tmp_path / "outputs" / "extras-images").rglob("*.png"))
    assert out.name == "00000-42.png"
    with Image.open(out) as image:
        assert image.size == (80, 48) and image.info["postprocessing"] == (
            "Postprocess upscale by: 2, Postprocess upscaler: Lanczos")
    assert read_png_infotext(out) == SOURCE_TEXT


def test_cli_extras_mistakes_are_one_line(tmp_path, capsys):
    from webui.cli import main

    assert main(["extras", str(tmp_path / "missing.png"), "--data-dir", str(tmp_path)]) == 2
    assert main(["extras", str(saved_with_text(tmp_path / "a.png")), "--data-dir", str(tmp_path), "--width",
                 "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: Cannot read the picture") and err[1] == "error: --width and --height go together"


def test_extras_from_the_ui(served, tmp_path, data_dir):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False)
    source = saved_with_text(tmp_path / "ui.png")
    gallery, info = client.predict(handle_file(str(source)), None, "", "", "Scale to", 2, 80, 80, True, "Lanczos",
                                   "None", 0, api_name="/extras")
    [item] = gallery
    with Image.open(item["image"]) as image:
        assert image.size == (80, 80)
    assert "Postprocess upscale to: 80x80" in info
    [saved] = list((data_dir / "outputs" / "extras-images").rglob("*.png"))
    with Image.open(saved) as image:
        assert image.info["parameters"] == SOURCE_TEXT

    # Batch from directory: every picture of the folder, other files skipped with a warning
    folder = tmp_path / "folder"
    folder.mkdir()
    saved_with_text(folder / "b.png")
    picture().save(folder / "A.png")
    (folder / "notes.txt").write_text("not a picture")
    gallery, info = client.predict(None, None, str(folder), str(tmp_path / "out"), "Scale by", 2, 80, 80, True,
                                   "Lanczos", "None", 0, api_name="/extras")
    assert len(gallery) == 2 and "notes.txt skipped" in info
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.png", "00001-42.png"]  # A.png, b.png
    with pytest.raises(Exception, match="does not exist"):
        client.predict(None, None, str(tmp_path / "nowhere"), "", "Scale by", 2, 80, 80, True, "Lanczos", "None",
                       0, api_name="/extras")


def test_folder_sources_are_the_folders_pictures_in_name_order(tmp_path):
    saved_with_text(tmp_path / "b.png")
    picture().save(tmp_path / "A.jpg")
    picture().save(tmp_path / ".hidden.png")
    (tmp_path / "c.txt").write_text("not a picture")
    (tmp_path / "sub").mkdir()
    picture().save(tmp_path / "sub" / "d.png")
    sources = extras.FolderSources(tmp_path)
    assert len(sources) == 3 and [p.name for p in sources.paths] == ["A.jpg", "b.png", "c.txt"]
    opened = list(sources)
    assert [(image.size, text) for image, text in opened] == [((40, 24), None), ((40, 24), SOURCE_TEXT)]
    [warning] = sources.warnings
    assert warning.startswith("c.txt skipped: Cannot read the picture c.txt")


def test_folder_sources_refuse_what_is_no_folder_in_one_line(tmp_path):
    from webui.engine.errors import UserError

    (tmp_path / "file.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    for folder, message in [("", "give an input directory"), ("  ", "give an input directory"),
                            (tmp_path / "missing", "does not exist"), (tmp_path / "file.png", "is a file"),
                            (tmp_path / "empty", "has no files")]:
        with pytest.raises(UserError, match=message):
            extras.FolderSources(folder)


def test_cli_extras_from_a_directory(tmp_path, capsys):
    from webui.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    saved_with_text(folder / "one.png")
    (folder / "readme.md").write_text("# not a picture")
    out = tmp_path / "upscaled"
    assert main(["extras", "--input-dir", str(folder), "--output-dir", str(out), "--data-dir", str(tmp_path),
                 "--upscaler-1", "Lanczos"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / "00000-42.png")]
    assert "warning: readme.md skipped" in captured.err
    with Image.open(out / "00000-42.png") as image:
        assert image.size == (80, 48) and image.info["parameters"] == SOURCE_TEXT
    # without --output-dir: where single pictures go
    assert main(["extras", "--input-dir", str(folder), "--data-dir", str(tmp_path)]) == 0
    assert len(list((tmp_path / "outputs" / "extras-images").rglob("*.png"))) == 1
    capsys.readouterr()
    assert main(["extras", "--input-dir", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path)]) == 2
    assert main(["extras", "--input-dir", str(folder), str(folder / "one.png"), "--data-dir", str(tmp_path)]) == 2
    assert main(["extras", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: input directory {tmp_path / 'nowhere'} does not exist",
                   "error: give pictures to upscale or --input-dir, not both",
                   "error: give pictures to upscale, or --input-dir with a folder of them"]


def b64(image_bytes: bytes) -> str:
    return base64.b64encode(image_bytes).decode()
