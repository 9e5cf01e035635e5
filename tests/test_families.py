"""Every architecture through the public path: a tiny file in its original single-file layout is detected from
shapes, loaded by the manager and generates; switching between families in one process."""
import numpy as np
import pytest

from conftest import small
from webui.engine.manager import PipelineManager
from webui.engine.models.tiny import make_tiny_checkpoint

FAMILIES = [
    # (file name, make_tiny_checkpoint kwargs, expected family, prediction, inpainting)
    ("sd2.safetensors", dict(family="sd2"), "sd2", "epsilon", False),
    ("sd2v.safetensors", dict(family="sd2", prediction="v_prediction"), "sd2", "v_prediction", False),
    ("xl.safetensors", dict(family="sdxl"), "sdxl", "epsilon", False),
    ("refiner.safetensors", dict(family="sdxl_refiner"), "sdxl_refiner", "epsilon", False),
    ("sd1-inpainting.safetensors", dict(family="sd1", inpainting=True), "sd1", "epsilon", True),
    ("sd2-inpainting.safetensors", dict(family="sd2", inpainting=True), "sd2", "epsilon", True),
    ("xl-inpainting.safetensors", dict(family="sdxl", inpainting=True), "sdxl", "epsilon", True),
]


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families") / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    make_tiny_checkpoint(folder / "sd1.safetensors", seed=0)
    for name, kwargs, *_ in FAMILIES:
        make_tiny_checkpoint(folder / name, seed=0, **kwargs)
    return folder


@pytest.fixture
def fam_manager(family_dir):
    return PipelineManager(family_dir, family_dir.parent.parent, device="cpu")


def pixels(processed):
    return np.asarray(processed.images[0]).astype(np.int16)


@pytest.mark.parametrize("name, kwargs, family, prediction, inpainting", FAMILIES)
def test_each_family_is_detected_and_generates(fam_manager, name, kwargs, family, prediction, inpainting):
    model = fam_manager.load(name)
    arch = model.components.arch
    assert (arch.family, arch.prediction_type, arch.inpainting) == (family, prediction, inpainting)
    for sampler in ("Euler a", "DPM++ 2M", "DDIM"):
        processed = fam_manager.txt2img(small(steps=3, sampler_name=sampler, width=64, height=64), None)
        assert pixels(processed).std() > 1, (name, sampler)
        again = fam_manager.txt2img(small(steps=3, sampler_name=sampler, width=64, height=64), None)
        assert np.array_equal(pixels(again), pixels(processed))
    assert f"Model: {name[:-len('.safetensors')]}" in processed.infotexts[0]
    # A1111 writes the conditioning strength for every job on a 9-channel model
    assert ("Conditional mask weight: 1," in processed.infotexts[0]) == inpainting


def test_v_and_epsilon_readings_of_a_model_differ(fam_manager):
    fam_manager.load("sd2.safetensors")
    eps = pixels(fam_manager.txt2img(small(steps=4), None))
    fam_manager.load("sd2v.safetensors")
    v = pixels(fam_manager.txt2img(small(steps=4), None))
    assert not np.array_equal(eps, v)


def test_sdxl_uses_prompt_and_size(fam_manager):
    fam_manager.load("xl.safetensors")
    a = pixels(fam_manager.txt2img(small(steps=3, prompt="a cat"), None))
    b = pixels(fam_manager.txt2img(small(steps=3, prompt="a dog"), None))
    assert not np.array_equal(a, b)
    wide = fam_manager.txt2img(small(steps=3, width=96, height=64), None)
    assert wide.images[0].size == (96, 64)


def test_sd1_sdxl_sd1_switching_in_one_process(fam_manager):
    fam_manager.settings.sd_checkpoints_limit = 1
    fam_manager.load("sd1.safetensors")
    first = pixels(fam_manager.txt2img(small(steps=4), None))
    fam_manager.load("xl.safetensors")
    fam_manager.txt2img(small(steps=2), None)
    fam_manager.load("sd1.safetensors")
    assert np.array_equal(pixels(fam_manager.txt2img(small(steps=4), None)), first)


def test_unknown_architecture_is_a_clear_error_and_the_previous_model_keeps_working(fam_manager, family_dir):
    import torch
    from safetensors.torch import load_file, save_file

    state_dict = load_file(str(family_dir / "sd1.safetensors"))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    state_dict[key] = torch.zeros(32, 5, 3, 3)  # 5 input channels: a depth model, not supported
    save_file(state_dict, str(family_dir / "depth.safetensors"))
    fam_manager.load("sd1.safetensors")
    before = pixels(fam_manager.txt2img(small(steps=3), None))
    with pytest.raises(ValueError, match="depth|5 input channels|unsupported"):
        fam_manager.load("depth.safetensors")
    assert np.array_equal(pixels(fam_manager.txt2img(small(steps=3), None)), before)


def test_a_diffusers_folder_is_listed_and_generates_like_its_single_file(fam_manager, family_dir):
    from model_cases import save_diffusers_folder
    from webui.engine import models as architecture
    from webui.engine.models.checkpoints import read_state_dict

    state_dict = read_state_dict(family_dir / "sd1.safetensors")
    save_diffusers_folder(architecture.build_components(state_dict, architecture.detect(state_dict)),
                 family_dir / "sd1-diffusers")
    assert "sd1-diffusers" in [c.name for c in fam_manager.list_checkpoints()]
    fam_manager.load("sd1.safetensors")
    single = pixels(fam_manager.txt2img(small(steps=3), None))
    fam_manager.load("sd1-diffusers")
    processed = fam_manager.txt2img(small(steps=3), None)
    assert np.array_equal(pixels(processed), single)
    assert "Model: sd1-diffusers" in processed.infotexts[0]
