"""SD2 (ε and v), SDXL base, SDXL refiner and inpainting variants: detection from shapes, exact builds, the
original single-file layouts, prediction-type overrides, refusals, and diffusers-format folders (CPU, offline)."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from webui.engine import models as architecture
from webui.engine.models import ldm_layout, tiny
from webui.engine.models import (
    ArchitectureError,
    build_components,
    build_components_from_folder,
    detect,
    detect_folder,
    make_architecture,
    sidecar_yaml,
)

P = "model.diffusion_model."
CASES = [  # (family, inpainting, prediction, display name)
    ("sd2", False, "epsilon", "SD2"),
    ("sd2", False, "v_prediction", "SD2 (v)"),
    ("sdxl", False, "epsilon", "SDXL"),
    ("sdxl", False, "v_prediction", "SDXL (v)"),
    ("sdxl_refiner", False, "epsilon", "SDXL refiner"),
    ("sd1", True, "epsilon", "SD1 inpainting"),
    ("sd2", True, "epsilon", "SD2 inpainting"),
    ("sdxl", True, "epsilon", "SDXL inpainting"),
]
IDS = [name for *_, name in CASES]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_families")
    made = {}

    def get(family, inpainting=False, prediction="epsilon"):
        key = (family, inpainting, prediction)
        if key not in made:
            made[key] = tiny.make_tiny_checkpoint(folder / f"{family}-{inpainting}-{prediction}.safetensors",
                                                  family=family, inpainting=inpainting, prediction=prediction)
        return made[key]
    return get


def state(files, family, inpainting=False, prediction="epsilon"):
    return load_file(files(family, inpainting, prediction))


def weights(module):
    return module.state_dict() if module is not None else {}


# ---------------------------------------------------------------------------------------------- layouts

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


# ---------------------------------------------------------------------------------------------- detect

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


def test_tiny_v_requires_a_signal_in_the_weights(tmp_path):
    with pytest.raises(ValueError, match="indistinguishable"):
        tiny.make_tiny_checkpoint(tmp_path / "x.safetensors", family="sd1", prediction="v_prediction")


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


# ---------------------------------------------------------------------------------------------- build

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


# ---------------------------------------------------------------------------------------------- folders

def _save_folder(c, folder, variant=None):
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    scheduler = EulerDiscreteScheduler.from_config(c.arch.scheduler_config)
    if c.arch.family in ("sd1", "sd2"):
        pipe = StableDiffusionPipeline(c.vae, c.text_encoder, c.tokenizer, c.unet, scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    elif c.arch.family == "sdxl":
        pipe = StableDiffusionXLPipeline(c.vae, c.text_encoder, c.text_encoder_2, c.tokenizer, c.tokenizer_2,
                                         c.unet, scheduler)
    else:
        pipe = StableDiffusionXLImg2ImgPipeline(c.vae, None, c.text_encoder_2, None, c.tokenizer_2, c.unet, scheduler,
                                                requires_aesthetics_score=True)
    pipe.save_pretrained(folder, variant=variant)
    return folder


@pytest.mark.parametrize(("family", "inpainting", "prediction", "variant"), [
    ("sd1", False, "epsilon", None),
    ("sd2", False, "v_prediction", None),
    ("sdxl", True, "epsilon", "fp16"),
    ("sdxl_refiner", False, "epsilon", None),
])
def test_diffusers_folder_round_trip(files, tmp_path, family, inpainting, prediction, variant):
    sd = state(files, family, inpainting, prediction)
    c = build_components(sd, detect(sd))
    folder = _save_folder(c, tmp_path / "model", variant)
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
    folder = _save_folder(build_components(sd, detect(sd)), tmp_path / "sd2")
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
