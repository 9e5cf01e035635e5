"""The single-file (LDM) key layouts: SD1's, OpenCLIP's for SD2, SDXL's conditioner, at full size on meta tensors
(matching diffusers' converters and detected back to the same configs) and in the tiny files (CPU, offline)."""
from __future__ import annotations

import pytest
import torch

from model_cases import P, state
from webui.engine import models as architecture
from webui.engine.models import detect, ldm_layout, make_architecture, tiny

pytest_plugins = ["model_fixtures"]  # the tiny checkpoints' fixtures: files


def test_full_size_sd15_layout_on_meta():
    """The real SD1.5 shapes, without memory: our LDM names match diffusers' converters and known file keys."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    arch = make_architecture("sd1")
    unet, vae, text_encoder, text_encoder_2 = architecture.empty_modules(arch)
    assert text_encoder_2 is None
    sd = ldm_layout.to_ldm_state_dict(unet, vae, text_encoder)
    assert len(sd) == 1130  # 686 UNet + 248 VAE + 196 CLIP (files that also carry position_ids have 1131)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    P, V, T = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."
    assert shapes[P + "input_blocks.0.0.weight"] == (320, 4, 3, 3)
    assert shapes[P + "input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert shapes[P + "input_blocks.11.0.out_layers.3.weight"] == (1280, 1280, 3, 3)
    assert shapes[P + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"] == (1280, 768)
    assert shapes[P + "output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)  # no attention at that level
    assert shapes[P + "output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert shapes[P + "output_blocks.8.2.conv.weight"] == (640, 640, 3, 3)
    assert shapes[P + "output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert shapes[P + "out.2.weight"] == (4, 320, 3, 3)
    assert shapes[V + "encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes[V + "decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert shapes[V + "decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert V + "decoder.up.0.upsample.conv.weight" not in sd and V + "encoder.down.3.downsample.conv.weight" not in sd
    assert shapes[T + "final_layer_norm.weight"] == (768,)
    assert shapes[T + "encoder.layers.11.mlp.fc1.weight"] == (3072, 768)

    assert detect(sd) == arch  # every size comes back from the shapes
    for module, converted in ((unet, convert_ldm_unet_checkpoint(sd, arch.unet_config)),
                              (vae, convert_ldm_vae_checkpoint(sd, arch.vae_config))):
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in converted.items()} == want


@pytest.mark.parametrize("family", ["sd2", "sdxl", "sdxl_refiner"])
def test_full_size_layouts_on_meta(family):
    """The published shapes, without memory: written in the LDM layout and detected back to the same configs."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    arch = make_architecture(family)
    modules = architecture.empty_modules(arch)
    sd = ldm_layout.to_ldm_state_dict(*modules, family=family)
    assert detect(sd) == arch
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    unet_keys = sum(k.startswith(P) for k in sd)
    if family == "sd2":
        assert unet_keys == 686 and arch.unet_config["attention_head_dim"] == [5, 10, 20, 20]
        assert shapes[P + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"] == (640, 1024)
        assert shapes["cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight"] == (3072, 1024)
        assert arch.text_encoder_config["num_hidden_layers"] == 24  # all of OpenCLIP-H; clip_skip 2 reads 23
    elif family == "sdxl":
        assert unet_keys == 1680 and arch.unet_config["transformer_layers_per_block"] == [1, 2, 10]
        assert shapes[P + "label_emb.0.0.weight"] == (1280, 2816)
        assert shapes[P + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"] == (640, 2048)
        assert shapes[P + "middle_block.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
        assert shapes["conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight"] == (5120, 1280)
        assert shapes["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
        assert shapes["conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc1.weight"] == (3072, 768)
    else:
        assert arch.unet_config["transformer_layers_per_block"] == 4
        assert arch.unet_config["attention_head_dim"] == [6, 12, 24, 24]
        assert shapes[P + "label_emb.0.0.weight"] == (1536, 2560)
        assert shapes[P + "input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight"] == (768, 1280)
        assert shapes["conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    converted = convert_ldm_unet_checkpoint(sd, arch.unet_config)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape)
                                                                 for k, v in modules.unet.state_dict().items()}


def test_original_single_file_layouts(files):
    sd2 = state(files, "sd2")
    o = "cond_stage_model.model."
    assert sd2[o + "transformer.resblocks.1.attn.in_proj_weight"].shape == (96, 32)  # q|k|v stacked
    assert sd2[o + "transformer.resblocks.0.attn.in_proj_bias"].shape == (96,)
    for name in ("ln_1.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_proj.weight", "attn.out_proj.weight"):
        assert o + "transformer.resblocks.0." + name in sd2
    assert sd2[o + "token_embedding.weight"].shape == (49408, 32)
    assert sd2[o + "positional_embedding"].shape == (77, 32)
    assert sd2[o + "ln_final.weight"].shape == (32,)
    assert sd2[o + "text_projection"].shape == (32, 32) and sd2[o + "logit_scale"].shape == ()
    assert not any(k.startswith(("cond_stage_model.transformer.", "conditioner.")) for k in sd2)
    assert sd2[P + "input_blocks.1.1.proj_in.weight"].ndim == 2  # SD2's linear transformer projections

    xl = state(files, "sdxl")
    c, g = "conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model."
    assert xl[c + "embeddings.token_embedding.weight"].shape == (49408, 32)
    assert xl[c + "encoder.layers.1.self_attn.q_proj.weight"].shape == (32, 32)
    assert xl[g + "transformer.resblocks.1.attn.in_proj_weight"].shape == (192, 64)
    assert xl[g + "text_projection"].shape == (64, 64) and g + "logit_scale" in xl
    assert xl[P + "label_emb.0.0.weight"].shape == (128, 64 + 6 * 256)
    assert xl[P + "input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight"].shape == (64, 96)
    assert P + "input_blocks.1.1.proj_in.weight" not in xl  # no attention at full resolution, as SDXL
    assert not any(k.startswith("cond_stage_model.") for k in xl)

    refiner = state(files, "sdxl_refiner")
    r = "conditioner.embedders.0.model."
    assert refiner[r + "transformer.resblocks.0.attn.in_proj_weight"].shape == (192, 64)
    assert refiner[r + "text_projection"].shape == (64, 64)
    assert refiner[P + "label_emb.0.0.weight"].shape == (128, 64 + 5 * 256)
    assert not any(k.startswith(("conditioner.embedders.1.", "conditioner.embedders.0.transformer.")) for k in refiner)

    assert state(files, "sd1", inpainting=True)[P + "input_blocks.0.0.weight"].shape == (32, 9, 3, 3)
    assert "v_pred" in state(files, "sdxl", prediction="v_prediction")


def test_openclip_key_map_is_exact_and_matches_diffusers():
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    te2 = tiny.tiny_modules(3, "sdxl").text_encoder_2
    ours = ldm_layout.to_openclip(te2.state_dict(), "conditioner.embedders.1.model.")
    back = ldm_layout.from_openclip(ours, "conditioner.embedders.1.model.")
    want = {k.removeprefix("text_model."): v for k, v in te2.state_dict().items()}
    assert back.keys() == want.keys() and all(torch.equal(back[k], want[k]) for k in want)
    theirs = convert_open_clip_checkpoint(te2, ours, prefix="conditioner.embedders.1.model.")
    assert {k.removeprefix("text_model."): v for k, v in theirs.items()}.keys() == want.keys()
    assert all(torch.equal(theirs[k], want[k.removeprefix("text_model.")]) for k in theirs)
    assert ldm_layout.openclip_key("text_model.encoder.layers.3.self_attn.k_proj.bias", "x.") == \
        "x.transformer.resblocks.3.attn.in_proj_bias"
