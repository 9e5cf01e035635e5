"""The tiny random checkpoints the test suite runs on: deterministic and bit-for-bit unchanged, refused where a
variant would be indistinguishable, and runnable end to end (text encoders, UNet, VAE) for every family (CPU,
offline)."""
from __future__ import annotations

import hashlib

import pytest
import torch

from model_cases import CASES, IDS, read, state
from webui.engine.models import build_components, detect, tiny

pytest_plugins = ["model_fixtures"]  # the tiny checkpoints' fixtures: ckpt_files, files, sd, tiny_sd


def test_tiny_checkpoint_is_deterministic(tmp_path, tiny_sd):
    torch.manual_seed(123)
    expected_rng = torch.rand(3)
    torch.manual_seed(123)
    same = read(tiny.make_tiny_checkpoint(tmp_path / "a.safetensors", seed=0))
    assert torch.equal(torch.rand(3), expected_rng)  # the global RNG was not used
    other = read(tiny.make_tiny_checkpoint(tmp_path / "b.safetensors", seed=1))
    assert all(torch.equal(same[k], tiny_sd[k]) for k in tiny_sd)
    assert not torch.equal(other["model.diffusion_model.out.2.weight"], tiny_sd["model.diffusion_model.out.2.weight"])
    with pytest.raises(ValueError, match="safetensors or .ckpt"):
        tiny.make_tiny_checkpoint(tmp_path / "c.bin")


def test_sd1_tiny_checkpoint_unchanged():
    """Other tests (and users' fixtures) depend on the seed-0 SD1 tiny model: same tensors, bit for bit."""
    sd = tiny.tiny_state_dict(0)
    h = hashlib.sha256()
    for key in sorted(sd):
        tensor = sd[key]
        h.update(key.encode())
        h.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        h.update(tensor.contiguous().numpy().tobytes())
    assert h.hexdigest() == "486e86b35916a595f182859a53dc52182ebcd34cc19bd4b2de9ae86cb9359425"


def test_tiny_v_requires_a_signal_in_the_weights(tmp_path):
    with pytest.raises(ValueError, match="indistinguishable"):
        tiny.make_tiny_checkpoint(tmp_path / "x.safetensors", family="sd1", prediction="v_prediction")


def test_tiny_model_makes_a_varied_image(sd):
    c = build_components(sd, detect(sd))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ids = c.tokenizer(["a photo of a cat", ""], padding="max_length", max_length=77, return_tensors="pt")
        context = c.text_encoder(ids.input_ids).last_hidden_state
        latents = torch.randn(2, 4, 8, 8, generator=g)
        eps = c.unet(latents, 500, context).sample
        image = c.vae.decode(latents[:1] / c.vae.config.scaling_factor).sample
    assert eps.shape == latents.shape and eps.isfinite().all() and eps.std() > 0.1
    assert image.shape == (1, 3, 64, 64) and image.isfinite().all()
    assert image.std() > 0.05  # not flat


def _condition(c, prompts):
    """Each family's conditioning, as the arch fields describe it: hidden_states[-clip_skip] (+ final norm)."""
    hidden, pooled = [], None
    for tokenizer, encoder in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)):
        if encoder is None:
            continue
        ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
        out = encoder(ids, output_hidden_states=True)
        h = out.hidden_states[-c.arch.clip_skip]
        if c.arch.clip_final_norm:
            h = getattr(encoder, "text_model", encoder).final_layer_norm(h)
        hidden.append(h)
        pooled = getattr(out, "text_embeds", None)
    return torch.cat(hidden, dim=-1), pooled


@pytest.mark.parametrize(("family", "inpainting", "prediction", "name"), CASES, ids=IDS)
def test_tiny_models_run(files, family, inpainting, prediction, name):
    sd = state(files, family, inpainting, prediction)
    c = build_components(sd, detect(sd))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        context, pooled = _condition(c, ["a photo of a cat", ""])
        assert context.shape == (2, 77, c.unet.config.cross_attention_dim)
        x = torch.randn(2, c.unet.config.in_channels, 8, 8, generator=g)
        extra = {}
        if c.arch.is_sdxl:
            n_ids = 6 if family == "sdxl" else 5
            time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0][:n_ids]] * 2)
            extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
        out = c.unet(x, 500, context, **extra).sample
        image = c.vae.decode(x[:1, :4] / c.vae.config.scaling_factor).sample
    assert out.shape == (2, 4, 8, 8) and out.isfinite().all() and out.std() > 0.1
    assert image.shape == (1, 3, 64, 64) and image.isfinite().all()
