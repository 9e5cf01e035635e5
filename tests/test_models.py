"""Model manager: RAM cache and hot swap, unload, VAE files, attention backends, precision fallbacks."""
import gc
import shutil
import weakref

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import small
from webui.engine import manager as manager_module
from webui.engine.infotext import parse_infotext
from webui.engine.models.vae import VAEError, decode_latents


def image(manager, **kw):
    return np.asarray(manager.txt2img(small(steps=4, **kw), None).images[0]).astype(np.int16)


@pytest.fixture
def three_models(manager, tiny_files):
    for name in ("other", "third"):
        shutil.copy(tiny_files["other"], manager.ckpt_dir / f"{name}.safetensors")
    return manager


def test_cache_keeps_the_limit_evicts_least_recently_used_and_frees_it(three_models):
    m = three_models
    m.settings.sd_checkpoints_limit = 2
    tiny_unet = weakref.ref(m.current.components.unet)
    m.load("other")
    assert list(p.name for p in m.cache) == ["tiny.safetensors", "other.safetensors"]
    m.load("tiny")  # touch tiny: now other is the least recently used
    m.load("third")
    assert list(p.name for p in m.cache) == ["tiny.safetensors", "third.safetensors"]
    m.load("other")
    assert list(p.name for p in m.cache) == ["third.safetensors", "other.safetensors"]
    gc.collect()
    assert tiny_unet() is None, "an evicted model must not stay in memory"


def test_switching_to_a_cached_model_reads_nothing_from_disk(three_models, monkeypatch):
    m = three_models
    m.settings.sd_checkpoints_limit = 2
    first = image(m)
    m.load("other")

    def no_disk(path, *args):
        raise AssertionError(f"read {path} from disk")

    monkeypatch.setattr(manager_module, "read_state_dict", no_disk)
    m.load("tiny")
    assert np.array_equal(image(m), first)
    with pytest.raises(AssertionError, match="from disk"):
        m.load("third")  # not cached: this one has to be read
    assert m.current.info.name == "tiny.safetensors"


def test_unload_frees_the_model(manager):
    unet = weakref.ref(manager.current.components.unet)
    manager.unload()
    gc.collect()
    assert manager.current is None and unet() is None
    assert image(manager).std() > 1  # the next job loads a model again


@pytest.fixture
def vae_file(manager, tiny_files):
    """The tiny checkpoint's own VAE as a standalone LDM-layout file, with a changed decoder output."""
    state_dict = load_file(str(tiny_files["safetensors"]))
    vae = {k[len("first_stage_model."):]: v for k, v in state_dict.items() if k.startswith("first_stage_model.")}
    vae["decoder.conv_out.bias"] = vae["decoder.conv_out.bias"] + 0.3
    folder = manager.vae_dir
    folder.mkdir(parents=True, exist_ok=True)
    save_file(vae, str(folder / "bright.safetensors"))
    return folder / "bright.safetensors"


def test_vae_swap_changes_only_the_decode(manager, vae_file):
    unet_before = {k: v.clone() for k, v in manager.current.components.unet.state_dict().items()}
    baked = image(manager)
    bright = manager.txt2img(small(steps=4, vae="bright.safetensors"), None)
    bright_pixels = np.asarray(bright.images[0]).astype(np.int16)
    assert bright_pixels.mean() > baked.mean() + 5  # the bias shift brightens everything
    text = bright.infotexts[0]
    import hashlib
    vae_hash = hashlib.sha256(vae_file.read_bytes()).hexdigest()[:10]
    assert f", VAE hash: {vae_hash}, VAE: bright.safetensors, " in text
    assert parse_infotext(text).vae == "bright.safetensors"
    for k, v in manager.current.components.unet.state_dict().items():
        assert torch.equal(v, unet_before[k])
    assert np.array_equal(image(manager, vae="None"), baked)
    assert "VAE" not in manager.txt2img(small(steps=2, vae="None"), None).infotexts[0]


def test_automatic_vae_picks_the_one_named_like_the_checkpoint(manager, vae_file):
    baked = image(manager)
    assert np.array_equal(image(manager), baked)  # Automatic with no matching file = baked-in
    shutil.copy(vae_file, manager.ckpt_dir / "tiny.vae.safetensors")
    processed = manager.txt2img(small(steps=4), None)
    assert "VAE: tiny.vae.safetensors" in processed.infotexts[0]
    assert not np.array_equal(np.asarray(processed.images[0]).astype(np.int16), baked)


def test_a_vae_of_another_shape_is_a_clear_error(manager):
    manager.vae_dir.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, str(manager.vae_dir / "wrong.safetensors"))
    before = image(manager)
    with pytest.raises(VAEError, match="wrong.safetensors does not fit this checkpoint's VAE"):
        manager.txt2img(small(steps=2, vae="wrong.safetensors"), None)
    with pytest.raises(VAEError, match="VAE not found: 'missing'"):
        manager.txt2img(small(steps=2, vae="missing"), None)
    assert np.array_equal(image(manager), before)


def test_fp16_vae_that_overflows_is_rerun_in_fp32():
    class OverflowingVAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1, dtype=torch.float16))

        @property
        def dtype(self):
            return self.w.dtype

        @property
        def device(self):
            return self.w.device

        def decode(self, z, return_dict=False):
            out = z * self.w
            return (out * float("inf") if self.dtype == torch.float16 else out,)

    vae = OverflowingVAE()
    out = decode_latents(vae, torch.ones(1, 4, 2, 2))
    assert torch.isfinite(out).all() and vae.dtype == torch.float32


@pytest.mark.parametrize("mode", ["sdp", "sdp-no-mem", "sliced", "None", "xformers", "Automatic"])
def test_attention_modes_give_the_same_image(manager, mode):
    manager.settings.cross_attention_optimization = "sdp"
    reference = image(manager)
    manager.settings.cross_attention_optimization = mode
    assert np.abs(image(manager) - reference).max() <= 2


@pytest.mark.parametrize("offload", ["medvram", "lowvram"])
def test_offload_modes_give_the_same_image(data_dir, manager, offload):
    """On this CPU-only machine the execution device is the CPU too: this checks the hooks' plumbing."""
    from webui.engine.manager import PipelineManager

    reference = image(manager)
    offloaded = PipelineManager(manager.ckpt_dir, data_dir, device="cpu", offload=offload)
    offloaded.load("tiny")
    assert offloaded.current.offload_hooks is not None
    assert np.array_equal(image(offloaded), reference)


def test_unknown_offload_mode_is_refused(data_dir):
    from webui.engine.manager import PipelineManager

    with pytest.raises(ValueError, match="offload must be none, medvram or lowvram"):
        PipelineManager(data_dir, data_dir, device="cpu", offload="highvram")
