"""Architecture detection, building and the LDM key layout, on tiny random checkpoints (CPU, offline)."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from webui.engine import models as architecture
from webui.engine.models import ldm_layout, tiny
from webui.engine.models import (
    ArchitectureError,
    build_components,
    detect,
    make_architecture,
)

ENGINE = Path(architecture.__file__).parent


def read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def ckpt_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return {suffix: tiny.make_tiny_checkpoint(folder / f"tiny{suffix}") for suffix in (".safetensors", ".ckpt")}


@pytest.fixture(scope="module")
def tiny_sd(ckpt_files):
    return read(ckpt_files[".safetensors"])


@pytest.fixture
def sd(tiny_sd):
    return dict(tiny_sd)  # a shallow copy each test may edit


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


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_build_is_exact_round_trip(ckpt_files, suffix):
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


def test_missing_key_read_by_detect_is_named(sd):
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(ArchitectureError, match=r"model\.diffusion_model\.out\.2\.weight is missing"):
        detect(sd)


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


def test_engine_imports_no_web_framework():
    banned = {"gradio", "fastapi", "starlette", "uvicorn"}
    for path in ENGINE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & banned, f"{path.relative_to(ENGINE)} imports {names}"


def test_matches_diffusers_single_file_loader(ckpt_files, sd, tmp_path):
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
