"""Bad numbers and text are refused or repaired at entry, by name, and never stored or passed to a job."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import small
from webui.engine.infotext import format_infotext, parse_infotext
from webui.engine.params import InvalidParams


@pytest.mark.parametrize("change, message", [
    (dict(sigma_min=-5.0), "sigma min must be at least 0.0, got -5"),
    (dict(eta_noise_seed_delta=2**64), "ENSD must be between 0 and 4294967295"),
    (dict(eta_ancestral=float("nan")), "eta must be a finite number"),
    (dict(randn_source="NV"), "RNG source must be one of CPU, GPU"),
    (dict(CLIP_stop_at_last_layers=13), "clip skip must be between 1 and 12"),
])
def test_a_bad_setting_is_refused_and_nothing_is_stored(manager, change, message):
    before = manager.txt2img(small(sampler_name="DPM++ 2M", scheduler="Karras"), None)
    with pytest.raises(InvalidParams, match=message):
        manager.update_settings(s_noise=0.5, **change)  # refused whole: s_noise is not stored either
    assert manager.settings.s_noise == 1.0
    after = manager.txt2img(small(sampler_name="DPM++ 2M", scheduler="Karras"), None)
    assert np.array_equal(np.asarray(after.images[0]), np.asarray(before.images[0]))


@pytest.mark.parametrize("field, value, message", [
    ("sigma_min", float("nan"), "schedule min sigma must be a finite number"),
    ("ensd", 2**64, "eta noise seed delta must be between 0 and 4294967295"),
    ("eta", 3.0, "eta must be between 0.0 and 1.0"),
])
def test_bad_request_knobs_are_refused_by_name(manager, field, value, message):
    with pytest.raises(InvalidParams, match=message):
        manager.txt2img(small(**{field: value}), None)


def test_cli_nan_sigma_is_an_error_not_a_black_image(tmp_path, tiny_files, capsys):
    from webui import cli

    code = cli.main(["txt2img", "--ckpt", str(tiny_files["safetensors"]), "--prompt", "a cat", "--steps", "1",
                     "--width", "64", "--height", "64", "--sigma-min", "nan", "--outdir", str(tmp_path)])
    assert code == 2
    assert "schedule min sigma must be a finite number" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.png"))


def test_out_of_range_infotext_values_stay_text():
    text = ("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 99999999999999999999, Size: 64x64, "
            "Schedule min sigma: nan, ENSD: 18446744073709551616")
    params = parse_infotext(text)
    assert (params.seed, params.sigma_min, params.ensd, params.steps) == (-1, None, None, 20)
    assert params.extra["Seed"] == "99999999999999999999"
    params.validate()  # what reaches a job is valid
    assert "Seed: 99999999999999999999" in format_infotext(params)  # and nothing the user wrote is lost


def test_a_lone_surrogate_in_a_prompt_is_replaced_with_a_warning(manager):
    processed = manager.txt2img(small(prompt="a \ud800 cat", negative_prompt="ugly \udfff"), None)
    assert processed.images and processed.images[0].size == (64, 64)
    assert any("prompt were replaced" in w for w in processed.warnings)
    assert any("negative prompt were replaced" in w for w in processed.warnings)
    assert manager.token_count("a \ud800 cat", 20)[1] == 75


@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown device 'bogus'"),
    ("cuda", "device 'cuda' cannot be used"),
])
def test_bad_devices_are_one_line_errors(tmp_path, tiny_files, capsys, device, message):
    import torch

    from webui import cli

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = cli.main(["txt2img", "--device", device, "--ckpt", str(tiny_files["safetensors"]), "--prompt", "x",
                     "--outdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message}") and "Traceback" not in err


@pytest.mark.parametrize("scale", ["nan", "0", "-1", "inf"])
def test_img2img_scale_must_be_a_positive_number(tmp_path, tiny_files, capsys, scale):
    from PIL import Image

    from webui import cli

    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    code = cli.main(["img2img", "--ckpt", str(tiny_files["safetensors"]), "--init-image", str(init),
                     "--scale", scale, "--outdir", str(tmp_path)])
    assert code == 2 and "--scale must be a number above 0" in capsys.readouterr().err


def test_common_flags_may_come_before_the_subcommand(tmp_path, tiny_files, capsys):
    from webui import cli

    code = cli.main(["--outdir", str(tmp_path), "txt2img", "--ckpt", str(tiny_files["safetensors"]),
                     "--prompt", "img2img", "--steps", "1", "--width", "64", "--height", "64"])
    assert code == 0
    (path,) = capsys.readouterr().out.split()
    assert path.startswith(str(tmp_path)) and path.endswith(".png")


@pytest.mark.parametrize("shape, message", [((10**6, 0, 3, 3), "empty dimension"),
                                            ((40000, 4, 3, 3), "wrong shape .*input_blocks.0.0.weight")])
def test_absurd_tensor_shapes_are_refused_before_allocation(manager, data_dir, shape, message):
    import torch
    from safetensors.torch import save_file

    from webui.engine.models import ArchitectureError
    from webui.engine.models.tiny import tiny_state_dict

    state = tiny_state_dict(0)
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(shape)
    save_file(state, str(data_dir / "models" / "Stable-diffusion" / "absurd.safetensors"))
    before = np.asarray(manager.txt2img(small(steps=2), None).images[0])
    with pytest.raises(ArchitectureError, match=message):
        manager.load("absurd")
    assert np.array_equal(np.asarray(manager.txt2img(small(steps=2), None).images[0]), before)


def test_implausible_widths_are_refused_from_shapes_alone():
    """A file claiming a 20000-wide text encoder is refused by detection, which reads shapes only (meta
    tensors here: nothing is allocated)."""
    import torch

    from webui.engine.models import ArchitectureError, detect
    from webui.engine.models.tiny import tiny_state_dict

    shapes = {k: torch.empty(v.shape, device="meta") for k, v in tiny_state_dict(0).items()}
    key = next(k for k in shapes if k.endswith("embeddings.token_embedding.weight"))
    shapes[key] = torch.empty(49408, 20000, device="meta")
    with pytest.raises(ArchitectureError, match="implausible checkpoint: text encoder 1 width 20000"):
        detect(shapes)

