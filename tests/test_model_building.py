"""Building components from a single-file checkpoint: exact weight round trips for every file format, family and
variant, modules ready for inference, tokenizers, the refusal of missing or wrong-shaped weights, and diffusers'
own single-file loader as an independent oracle (tiny random checkpoints, CPU, offline)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from model_cases import CASES, IDS, read, state, weights
from webui.engine.models import ArchitectureError, build_components, detect, ldm_layout, tiny

pytest_plugins = ["model_fixtures"]  # the tiny checkpoints' fixtures: ckpt_files, files, sd, tiny_sd


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_build_is_exact_round_trip_from_safetensors_and_ckpt(ckpt_files, suffix):
    """diffusers modules → our LDM file → diffusers' converters → modules: every tensor bit-identical."""
    originals = tiny.tiny_modules(seed=0)
    sd = read(ckpt_files[suffix])
    c = build_components(sd, detect(sd))
    for built, original in zip((c.unet, c.vae, c.text_encoder), originals):
        want, got = original.state_dict(), built.state_dict()
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    # and back: the built modules write the very same file contents
    again = ldm_layout.to_ldm_state_dict(c.unet, c.vae, c.text_encoder)
    assert again.keys() == sd.keys()
    assert all(torch.equal(again[k].reshape(sd[k].shape), sd[k]) and again[k].shape == sd[k].shape for k in sd)


@pytest.mark.parametrize(("family", "inpainting", "prediction", "name"), CASES, ids=IDS)
def test_build_is_exact_round_trip(files, family, inpainting, prediction, name):
    """diffusers modules → LDM file in the family's original layout → our loader: every tensor bit-identical."""
    originals = tiny.tiny_modules(0, family, inpainting, prediction)
    sd = state(files, family, inpainting, prediction)
    c = build_components(sd, detect(sd))
    for built, original in zip((c.unet, c.vae, c.text_encoder, c.text_encoder_2), originals):
        assert (built is None) == (original is None)
        want, got = weights(original), weights(built)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    again = ldm_layout.to_ldm_state_dict(c.unet, c.vae, c.text_encoder, c.text_encoder_2, family=family)
    extras = {k for k in sd if k.endswith(("logit_scale", "v_pred")) or k == "cond_stage_model.model.text_projection"}
    assert again.keys() == sd.keys() - extras
    assert all(torch.equal(again[k].reshape(sd[k].shape), sd[k]) for k in again)


def test_built_modules_are_ready(sd):
    from diffusers.models.attention_processor import AttnProcessor2_0

    c = build_components(sd, detect(sd), dtype=torch.float16)
    for module in (c.unet, c.vae, c.text_encoder):
        assert not module.training
        tensors = [*module.parameters(), *module.buffers()]
        assert not any(t.is_meta or t.requires_grad for t in tensors)
        assert {t.dtype for t in module.parameters()} == {torch.float16}
    assert c.text_encoder.embeddings.position_ids.tolist() == [list(range(77))]
    for module in (c.unet, c.vae):
        assert {type(p) for p in module.attn_processors.values()} == {AttnProcessor2_0}
    assert c.arch.scheduler_config["num_train_timesteps"] == 1000


def test_components_slots_and_tokenizers(files):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    sd2 = build_components(state(files, "sd2"), detect(state(files, "sd2")))
    assert isinstance(sd2.text_encoder, CLIPTextModel) and sd2.text_encoder_2 is None and sd2.tokenizer_2 is None
    # OpenCLIP pads with id 0 ("!"), A1111's FrozenOpenCLIPEmbedder id_pad = 0
    ids = sd2.tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert sd2.tokenizer.pad_token == "!" and ids[:4] == [49406, 320, 2368, 49407] and ids[4:] == [0] * 73

    xl = build_components(state(files, "sdxl"), detect(state(files, "sdxl")))
    assert isinstance(xl.text_encoder, CLIPTextModel) and isinstance(xl.text_encoder_2, CLIPTextModelWithProjection)
    assert xl.tokenizer.pad_token == "<|endoftext|>" and xl.tokenizer_2.pad_token == "!"
    assert xl.tokenizer_2("a cat", padding="max_length", max_length=77).input_ids[4:] == [0] * 73
    assert xl.text_encoders == [xl.text_encoder, xl.text_encoder_2]

    refiner = build_components(state(files, "sdxl_refiner"), detect(state(files, "sdxl_refiner")))
    assert refiner.text_encoder is None and refiner.tokenizer is None
    assert isinstance(refiner.text_encoder_2, CLIPTextModelWithProjection) and refiner.tokenizer_2.pad_token == "!"
    assert refiner.text_encoders == [refiner.text_encoder_2]


def test_tokenizer_from_bundled_files(sd):
    tok = build_components(sd, detect(sd)).tokenizer
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tok("a photo of a cat", padding="max_length", max_length=tok.model_max_length).input_ids
    assert tok.model_max_length == 77 and tok.pad_token == "<|endoftext|>"
    assert len(padded) == 77 and padded[7:] == [49407] * 70
    assert len(tok) == 49408


def test_extra_keys_and_old_text_prefix_are_accepted(sd):
    sd["model_ema.decay"] = torch.tensor(0.999)
    sd["alphas_cumprod"] = torch.linspace(1, 0, 1000)
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None].float()
    old = {k.replace("transformer.text_model.", "transformer."): v for k, v in sd.items()}
    for state_dict in (sd, old):
        c = build_components(state_dict, detect(state_dict))
        assert torch.equal(c.text_encoder.embeddings.token_embedding.weight,
                           sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"])


def test_missing_unet_key_is_named(sd):
    key = "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight"
    del sd[key]
    with pytest.raises(ArchitectureError, match="missing " + key.replace(".", r"\.")):
        build_components(sd, detect(sd))


@pytest.mark.parametrize("key", [
    "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight",
    "model.diffusion_model.output_blocks.1.1.conv.weight",
    "first_stage_model.decoder.up.3.block.1.conv1.weight",
    "first_stage_model.encoder.mid.attn_1.q.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight",
])
def test_wrong_shape_is_named(sd, key):
    sd[key] = torch.zeros(3, *sd[key].shape[1:])
    with pytest.raises(ArchitectureError, match=r"wrong shape " + key.replace(".", r"\.") + r": \[3"):
        build_components(sd, detect(sd))


def test_sd1_matches_diffusers_single_file_loader(ckpt_files, sd, tmp_path):
    """An independent oracle: diffusers' own from_single_file, given our configs, loads the same weights."""
    from diffusers import StableDiffusionPipeline

    arch = detect(sd)
    config = tmp_path / "config"
    shutil.copytree(arch.config_dir, config)
    for sub, cfg in (("unet", arch.unet_config), ("vae", arch.vae_config), ("text_encoder", arch.text_encoder_config)):
        (config / sub / "config.json").write_text(json.dumps(cfg))
    pipe = StableDiffusionPipeline.from_single_file(str(ckpt_files[".safetensors"]), config=str(config),
                                                    local_files_only=True)
    c = build_components(sd, arch)
    for theirs, ours in ((pipe.unet, c.unet), (pipe.vae, c.vae), (pipe.text_encoder, c.text_encoder)):
        a, b = theirs.state_dict(), ours.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", ["sd2", "sdxl", "sdxl_refiner"])
def test_matches_diffusers_single_file_loader(files, family, tmp_path):
    """An independent oracle for the OpenCLIP and SDXL layouts: diffusers' from_single_file with our configs."""
    from diffusers import (
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    cls = {"sd2": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline,
           "sdxl_refiner": StableDiffusionXLImg2ImgPipeline}[family]
    sd = state(files, family)
    arch = detect(sd)
    config = tmp_path / "config"
    shutil.copytree(arch.config_dir, config)
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if (cfg := getattr(arch, f"{sub}_config")) is not None:
            (config / sub / "config.json").write_text(json.dumps(cfg))
    pipe = cls.from_single_file(str(files(family)), config=str(config), local_files_only=True)
    c = build_components(sd, arch)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        theirs, ours = weights(getattr(pipe, name, None)), weights(getattr(c, name))
        assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
