"""diffusers-format model folders: detected and loaded to the same weights and tokenizers as the single file they
were saved from, diffusers' own conventions, and the errors for incomplete folders (CPU, offline)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from model_cases import save_diffusers_folder, state, weights
from webui.engine.models import ArchitectureError, build_components, build_components_from_folder, detect, detect_folder

pytest_plugins = ["model_fixtures"]  # the tiny checkpoints' fixtures: files


@pytest.mark.parametrize(("family", "inpainting", "prediction", "variant"), [
    ("sd1", False, "epsilon", None),
    ("sd2", False, "v_prediction", None),
    ("sdxl", True, "epsilon", "fp16"),
    ("sdxl_refiner", False, "epsilon", None),
])
def test_diffusers_folder_round_trip(files, tmp_path, family, inpainting, prediction, variant):
    sd = state(files, family, inpainting, prediction)
    c = build_components(sd, detect(sd))
    folder = save_diffusers_folder(c, tmp_path / "model", variant)
    arch = detect_folder(folder)
    assert (arch.family, arch.prediction_type, arch.inpainting) == (family, prediction, inpainting)
    assert (arch.clip_skip, arch.config_dir) == (c.arch.clip_skip, folder)
    loaded = build_components_from_folder(folder)
    assert loaded.arch == arch
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        theirs, ours = weights(getattr(loaded, name)), weights(getattr(c, name))
        assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs), name
        if getattr(loaded, name) is not None:
            assert not getattr(loaded, name).training
    for name in ("tokenizer", "tokenizer_2"):
        a, b = getattr(loaded, name), getattr(c, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert a.pad_token == b.pad_token and a("a cat").input_ids == b("a cat").input_ids


def test_diffusers_folder_conventions_and_errors(files, tmp_path):
    sd = state(files, "sd2")
    folder = save_diffusers_folder(build_components(sd, detect(sd)), tmp_path / "sd2")
    # diffusers' own SD2 conversions keep 23 of OpenCLIP-H's 24 layers: their last layer is already the one
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    (folder / "text_encoder" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 23}))
    assert detect_folder(folder).clip_skip == 1
    with pytest.raises(ArchitectureError, match="no model_index.json"):
        detect_folder(tmp_path)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(folder / "unet" / "weights.bin")
    with pytest.raises(ArchitectureError, match="no safetensors weights"):
        build_components_from_folder(folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(ArchitectureError, match="the VAE config"):
        detect_folder(folder)
