"""Detection from a checkpoint's shapes: every family and variant with its sizes, prediction-type overrides from a
yaml, and the refusals of what is missing, inconsistent or of no known family (tiny random checkpoints, CPU,
offline)."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from model_cases import CASES, IDS, P, read, state
from webui.engine.models import ArchitectureError, detect, sidecar_yaml, tiny

pytest_plugins = ["model_fixtures"]  # the tiny checkpoints' fixtures: ckpt_files, files, sd, tiny_sd


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_detect_tiny_sizes(ckpt_files, suffix):
    arch = detect(read(ckpt_files[suffix]))
    u, v, t = arch.unet_config, arch.vae_config, arch.text_encoder_config
    assert (arch.name, arch.family, arch.prediction_type, arch.inpainting) == ("SD1", "sd1", "epsilon", False)
    assert (arch.text_encoder_2_config, arch.tokenizer_2_dir) == (None, None)
    assert (arch.clip_skip, arch.clip_final_norm) == (1, True)
    assert (u["in_channels"], u["out_channels"], u["block_out_channels"], u["layers_per_block"]) == (4, 4, [32, 64], 1)
    assert u["down_block_types"] == ["CrossAttnDownBlock2D", "DownBlock2D"]
    assert u["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D"]
    assert (u["cross_attention_dim"], u["transformer_layers_per_block"], u["use_linear_projection"]) == (32, 1, False)
    assert (v["block_out_channels"], v["layers_per_block"], v["latent_channels"]) == ([32, 32, 64, 64], 1, 4)
    assert v["scaling_factor"] == 0.18215
    assert (t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"]) == (32, 2, 1)
    assert t["intermediate_size"] == 37
    assert (t["vocab_size"], t["max_position_embeddings"], t["hidden_act"]) == (49408, 77, "quick_gelu")
    assert arch.scheduler_config["beta_schedule"] == "scaled_linear"
    assert arch == tiny.tiny_architecture()  # detect and the tiny builder share one config path


@pytest.mark.parametrize(("family", "inpainting", "prediction", "name"), CASES, ids=IDS)
def test_detect_family_variant_and_sizes(files, family, inpainting, prediction, name):
    arch = detect(state(files, family, inpainting, prediction))
    assert (arch.name, arch.family, arch.prediction_type, arch.inpainting) == (name, family, prediction, inpainting)
    assert arch == tiny.tiny_architecture(family, inpainting, prediction)  # one config path for both
    u, v = arch.unet_config, arch.vae_config
    assert (u["in_channels"], u["out_channels"], u["block_out_channels"]) == (9 if inpainting else 4, 4, [32, 64])
    assert arch.scheduler_config["prediction_type"] == prediction
    assert arch.scheduler_config["beta_schedule"] == "scaled_linear" and arch.scheduler_config["beta_end"] == 0.012
    assert v["scaling_factor"] == (0.13025 if family.startswith("sdxl") else 0.18215)
    t, t2 = arch.text_encoder_config, arch.text_encoder_2_config
    if family in ("sd1", "sd2"):
        assert t2 is None and arch.tokenizer_2_dir is None
        assert (t["hidden_size"], t["num_hidden_layers"], u["cross_attention_dim"]) == (32, 2, 32)
        assert t["hidden_act"] == ("gelu" if family == "sd2" else "quick_gelu")
        assert u["use_linear_projection"] is (family == "sd2")
        assert u["attention_head_dim"] == ([1, 1] if family == "sd2" else 8)  # SD2: channels // 64, at least 1
        assert (arch.clip_skip, arch.clip_final_norm) == ((2, True) if family == "sd2" else (1, True))
    else:
        assert u["addition_embed_type"] == "text_time" and u["addition_time_embed_dim"] == 256
        assert u["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D"]
        assert (t2["hidden_size"], t2["projection_dim"], t2["hidden_act"]) == (64, 64, "gelu")
        assert (arch.clip_skip, arch.clip_final_norm) == (2, False)
        if family == "sdxl":
            assert t["hidden_size"] == 32 and u["cross_attention_dim"] == 96
            assert u["projection_class_embeddings_input_dim"] == 64 + 6 * 256
            assert u["transformer_layers_per_block"] == 2
        else:
            assert t is None and arch.tokenizer_dir is None and u["cross_attention_dim"] == 64
            assert u["projection_class_embeddings_input_dim"] == 64 + 5 * 256


def test_yaml_parameterization_overrides(files, tmp_path):
    eps, v = state(files, "sd2"), state(files, "sd2", prediction="v_prediction")
    assert detect(eps, yaml_text='model:\n  params:\n    parameterization: "v"\n').name == "SD2 (v)"
    assert detect(eps, yaml_text="model:\n  params:\n    parameterization: v\n").prediction_type == "v_prediction"
    assert detect(v, yaml_text="model:\n  params:\n    parameterization: eps\n").prediction_type == "epsilon"
    assert detect(v, yaml_text="model:\n  params:\n    # parameterization: eps\n    linear_start: 0.00085\n"
                  ).prediction_type == "v_prediction"  # commented out, and no parameterization: the weights tell
    sd1 = state(files, "sd1", inpainting=True)
    arch = detect(sd1, yaml_text="parameterization: 'v'")
    assert (arch.name, arch.scheduler_config["prediction_type"]) == ("SD1 inpainting (v)", "v_prediction")
    with pytest.raises(ArchitectureError, match="unsupported parameterization 'x0'"):
        detect(eps, yaml_text="parameterization: x0")
    # sidecar_yaml reads <checkpoint>.yaml next to the file, as A1111 does
    ckpt = tmp_path / "model.v2.safetensors"
    shutil.copy(files("sd2"), ckpt)
    assert sidecar_yaml(ckpt) is None
    (tmp_path / "model.v2.yaml").write_text('parameterization: "v"\n')
    assert detect(load_file(ckpt), sidecar_yaml(ckpt)).prediction_type == "v_prediction"


def test_missing_key_read_by_detect_is_named(sd):
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(ArchitectureError, match=r"model\.diffusion_model\.out\.2\.weight is missing"):
        detect(sd)


def test_not_stable_diffusion(sd):
    with pytest.raises(ArchitectureError, match="not a Stable Diffusion checkpoint: no UNet weights"):
        detect({k: v for k, v in sd.items() if not k.startswith("model.diffusion_model.")})
    with pytest.raises(ArchitectureError, match="not a Stable Diffusion"):
        detect({"weight": torch.zeros(3)})
    with pytest.raises(ArchitectureError, match="no VAE weights"):
        detect({k: v for k, v in sd.items() if not k.startswith("first_stage_model.")})
    with pytest.raises(ArchitectureError, match="no CLIP text encoder"):
        detect({k: v for k, v in sd.items() if not k.startswith("cond_stage_model.")})


def test_shapes_of_no_known_family_are_refused(sd):
    """A context dim no text tower explains (here SD2's 1024 with SD1's CLIP tower) is an error, not a guess."""
    for key in [k for k in sd if k.endswith("attn2.to_k.weight")]:
        sd[key] = torch.zeros(sd[key].shape[0], 1024)
    with pytest.raises(ArchitectureError, match="text encoder width 32 does not match the UNet's cross-attention "
                                                "dim 1024"):
        detect(sd)
    with pytest.raises(ArchitectureError, match=r"both cond_stage_model\.\* and conditioner\.embedders\.\*"):
        detect({**sd, "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": torch.zeros(3)})


def test_text_width_must_match_context_dim(sd):
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    sd[key] = torch.zeros(49408, 48)
    with pytest.raises(ArchitectureError, match="text encoder width 48 does not match"):
        detect(sd)


@pytest.mark.parametrize(("edit", "message"), [
    ("context999", "text encoder width 32 does not match the UNet's cross-attention dim 999"),
    ("in5", "5 input channels is a depth-conditioned model"),
    ("in8", "8 input channels is an instruct-pix2pix model"),
    ("in7", "7 input channels is no known Stable Diffusion variant"),
    ("out3", "predicts 3 channels but the VAE has 4"),
    ("unclip", "SD2 unCLIP"),
    ("upscaler", "class-conditioned UNet"),
])
def test_unknown_shapes_are_refused(files, edit, message):
    sd = dict(state(files, "sd2"))
    if edit == "context999":
        for key in [k for k in sd if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]:
            sd[key] = torch.zeros(sd[key].shape[0], 999)
    elif edit.startswith("in"):
        sd[P + "input_blocks.0.0.weight"] = torch.zeros(32, int(edit[2:]), 3, 3)
    elif edit == "out3":
        sd[P + "out.2.weight"] = torch.zeros(3, 32, 3, 3)
    elif edit == "unclip":
        sd[P + "label_emb.0.0.weight"] = torch.zeros(128, 1024)
    else:
        sd[P + "label_emb.weight"] = torch.zeros(1000, 128)
    with pytest.raises(ArchitectureError, match=message):
        detect(sd)


def test_sdxl_inconsistencies_are_refused(files):
    xl = state(files, "sdxl")
    with pytest.raises(ArchitectureError, match=r"size embedding takes 1599 inputs"):
        detect({**xl, P + "label_emb.0.0.weight": torch.zeros(128, 1599)})
    no_label = {k: v for k, v in xl.items() if not k.startswith(P + "label_emb.")}
    with pytest.raises(ArchitectureError, match="SDXL-style conditioner without the UNet's size embedding"):
        detect(no_label)
    clip_only = {k: v for k, v in xl.items() if not k.startswith("conditioner.embedders.1.")}
    with pytest.raises(ArchitectureError, match="text encoders clip under conditioner match no known family"):
        detect(clip_only)
    with pytest.raises(ArchitectureError, match="text encoder width 32 \\+ 64 does not match"):
        detect({**xl, **{k: torch.zeros(v.shape[0], 97) for k, v in xl.items() if k.endswith("attn2.to_k.weight")}})
