"""Loading in the precision the model runs in: an fp16 file run in fp32 is read tensor by tensor and cast as it is
read (no mapping of the whole file held beside the cast copy), with exactly the weights a whole-file read then
cast would give; the VAE keeps the file's values until it is built in its own precision; broken files still get
safetensors' clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import small
from webui.engine.models import streamed
from webui.engine.models.checkpoints import VAE_PREFIX, CheckpointError, read_state_dict
from webui.engine.models.tiny import tiny_state_dict


@pytest.fixture(scope="module")
def fp16_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "half.safetensors"
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in tiny_state_dict(3).items()}
    save_file(sd, str(path))
    return path


def test_an_fp16_file_read_for_fp32_is_cast_tensor_by_tensor(fp16_file, monkeypatch):
    reference = load_file(str(fp16_file))
    used = []
    original = streamed.read
    monkeypatch.setattr(streamed, "read", lambda *a: used.append(1) or original(*a))
    cast = read_state_dict(fp16_file, torch.float32)
    assert used, "the streamed reader was used"
    assert cast.keys() == reference.keys()
    for key, value in reference.items():
        if key.startswith(VAE_PREFIX) or not value.is_floating_point():
            assert cast[key].dtype == value.dtype, key  # the VAE as stored: checked, then cast when built
            assert torch.equal(cast[key], value), key
        else:
            assert cast[key].dtype == torch.float32, key
            assert torch.equal(cast[key], value.float()), key


def test_a_file_already_in_the_running_precision_is_used_in_place(fp16_file, monkeypatch):
    monkeypatch.setattr(streamed, "read", lambda *a: pytest.fail("no cast needed: safetensors' mapping is used"))
    state = read_state_dict(fp16_file, torch.float16)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


def test_the_model_loaded_from_fp16_for_fp32_draws_as_before(fp16_file, tmp_path):
    """The picture equals the one from the weights read whole and cast afterwards (the old way)."""
    from webui.engine.manager import PipelineManager
    from webui.engine.models import build_components, detect

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "half.safetensors").write_bytes(fp16_file.read_bytes())
    manager = PipelineManager(folder, tmp_path, device="cpu", dtype=torch.float32)
    loaded = manager.load("half")
    whole = load_file(str(fp16_file))
    old = build_components(whole, detect(whole), dtype=torch.float32)
    for mine, theirs in ((loaded.components.unet, old.unet), (loaded.components.vae, old.vae),
                         (loaded.components.text_encoder, old.text_encoder)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in b)
    picture = manager.txt2img(small(steps=2), None).images[0]
    assert np.asarray(picture).std() > 0


def test_the_vae_goes_from_the_file_to_its_own_precision_directly(tmp_path):
    """--no-half-vae with an fp16 model: the VAE's fp32 weights are the file's, not the file's rounded to fp16."""
    from webui.engine.models import build_components, detect

    sd = tiny_state_dict(4)
    key = next(k for k in sd if k.startswith(VAE_PREFIX) and sd[k].is_floating_point() and sd[k].dim() == 4)
    sd[key] = sd[key] + 1e-4  # values fp16 cannot hold exactly
    built = build_components(sd, detect(sd), dtype=torch.float16, vae_dtype=torch.float32)
    assert built.unet.dtype == torch.float16 and built.vae.dtype == torch.float32
    assert any(torch.equal(v, sd[key]) for v in built.vae.state_dict().values() if v.shape == sd[key].shape)


@pytest.mark.parametrize("damage", ["truncated", "offsets"])
def test_a_broken_file_is_still_named_with_the_reason(fp16_file, tmp_path, damage):
    data = bytearray(fp16_file.read_bytes())
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        n = int.from_bytes(data[:8], "little")
        data[8:8 + n] = data[8:8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[9,', 1)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        read_state_dict(broken, torch.float32)
