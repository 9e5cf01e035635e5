#!/usr/bin/env python3
"""Regenerate webui/engine/models/configs/: diffusers-layout config skeletons (no weights) + CLIP tokenizer files.

    python scripts/make_configs.py [--out webui/engine/models/configs]

The configs are the published values of SD1.5, SD2.1, SDXL base 1.0 and SDXL refiner 1.0 (diffusers layout),
written from the literal dicts below; the few deliberate departures are commented where they are made. The
tokenizer files are derived from the BPE vocabulary that ships inside the open_clip_torch wheel (the same
construction as CLIP's SimpleTokenizer), because nothing may be fetched from a model hub. Every tokenizer
folder holds the same vocab.json/merges.txt (git stores the identical blobs once); only the pad token differs.
Sizes in these files are only defaults: webui.engine.models overrides every size a checkpoint's tensor
shapes determine.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "webui" / "engine" / "models" / "configs"

SD1_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    # We ship no safety checker or feature extractor; null entries make diffusers skip them.
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

SD1_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# CLIP ViT-L/14 text tower. bos/eos/pad ids are the (historically wrong) values SD1.5 ships: with eos_token_id 2
# transformers pools at argmax(input_ids), which is the real <|endoftext|> (49407, the largest id).
SD1_TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "vocab_size": 49408,
}

SD1_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    # Historical misnomer in diffusers: for SD1 this is the number of heads (8), not the head dimension.
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": False,
}

SD1_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# SD2.x (512 ε and 768 v share these files; architecture.py sets prediction_type per checkpoint). Published
# SD2.1 values except two, both because we keep the checkpoint's OpenCLIP-H text tower whole:
#   num_hidden_layers 24, not diffusers' 23. diffusers' converter drops the last block because SD2 conditions
#   on the penultimate layer; we keep it (weights round-trip exactly) and Architecture.clip_skip = 2 tells the
#   prompt encoder to read hidden_states[-2] through final_layer_norm, which is the same tensor.
#   upcast_attention false for both: only the classic (non-SDPA) attention processor reads it, and SDPA keeps
#   fp32 softmax accumulation in fp16 anyway.
SD2_MODEL_INDEX = {**SD1_MODEL_INDEX, "_diffusers_version": "0.10.0", "scheduler": ["diffusers", "DDIMScheduler"]}

SD2_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.10.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}

# OpenCLIP ViT-H/14 text tower as transformers' CLIPTextModel: exact gelu (not quick_gelu), 16 heads of 64.
SD2_TEXT_ENCODER = {
    **SD1_TEXT_ENCODER,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "projection_dim": 512,
}

SD2_UNET = {
    **SD1_UNET,
    "_diffusers_version": "0.10.0",
    # Heads per level (diffusers' misnamed attention_head_dim): channels // 64, i.e. a head dim of 64.
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "upcast_attention": False,
    "use_linear_projection": True,
}

SD2_VAE = {**SD1_VAE, "_diffusers_version": "0.10.0", "sample_size": 768}

SDXL_MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.19.0",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

# The refiner has only the OpenCLIP-bigG tower; diffusers' refiner pipeline keeps it in the *_2 slots.
SDXL_REFINER_MODEL_INDEX = {
    **SDXL_MODEL_INDEX,
    "_class_name": "StableDiffusionXLImg2ImgPipeline",
    "force_zeros_for_empty_prompt": False,
    "requires_aesthetics_score": True,
    "text_encoder": [None, None],
    "tokenizer": [None, None],
}

SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

# CLIP ViT-L/14, as in SD1.
SDXL_TEXT_ENCODER = dict(SD1_TEXT_ENCODER)

# OpenCLIP ViT-bigG/14 with its text projection (pooled output → UNet's add_embedding).
SDXL_TEXT_ENCODER_2 = {
    **SD1_TEXT_ENCODER,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}

SDXL_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.19.0",
    "act_fn": "silu",
    # "text_time": the pooled OpenCLIP embedding and 6 size/crop numbers (256-dim sinusoids each) join the
    # timestep embedding; 1280 + 6·256 = 2816 = projection_class_embeddings_input_dim.
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": True,
}

# 1280 + 5·256 = 2560: original size, crop and aesthetic score instead of SDXL's target size.
SDXL_REFINER_UNET = {
    **SDXL_UNET,
    "attention_head_dim": [6, 12, 24, 24],
    "block_out_channels": [384, 768, 1536, 1536],
    "cross_attention_dim": 1280,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "projection_class_embeddings_input_dim": 2560,
    "transformer_layers_per_block": 4,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
}

# SDXL's VAE has SD1's shape but was retrained: other latent statistics (scaling 0.13025), and it overflows in
# fp16 (force_upcast tells diffusers-style code to decode in fp32).
SDXL_VAE = {**SD1_VAE, "_diffusers_version": "0.19.0", "force_upcast": True, "sample_size": 1024,
            "scaling_factor": 0.13025}


CLIP_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": "<|startoftext|>",
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}

OPENCLIP_PAD = "!"  # id 0

CLIP_SPECIAL_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table (256 entries, printable bytes first)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_bpe_path() -> Path:
    # find_spec, not import: importing open_clip pulls in torchvision, which we do not install.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("open_clip_torch is not installed (pip install --no-deps open_clip_torch)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise SystemExit(f"{path} not found in the open_clip_torch wheel")
    return path


def clip_vocab_and_merges(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # CLIP uses the first 49152-256-2 merges (line 0 is a header), leaving room for 256 bytes ×2 and 2 specials.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, len(vocab)
    return vocab, merges


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], pad_token: str = "<|endoftext|>") -> None:
    """CLIP's tokenizer files. OpenCLIP (SD2's encoder, SDXL's second one) pads with id 0, which is "!" in
    the CLIP vocabulary (A1111: FrozenOpenCLIPEmbedder id_pad = 0); OpenAI CLIP pads with <|endoftext|>."""
    folder.mkdir(parents=True, exist_ok=True)
    # No sort_keys: the file then reads in id order, like the published one.
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    # The header line matters: CLIP tokenizer readers skip the first line of merges.txt.
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    write_json(folder / "tokenizer_config.json", {**CLIP_TOKENIZER_CONFIG, "pad_token": pad_token})
    write_json(folder / "special_tokens_map.json", {**CLIP_SPECIAL_TOKENS, "pad_token": pad_token})


def write_sd1(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    write_json(folder / "model_index.json", SD1_MODEL_INDEX)
    write_json(folder / "scheduler" / "scheduler_config.json", SD1_SCHEDULER)
    write_json(folder / "text_encoder" / "config.json", SD1_TEXT_ENCODER)
    write_json(folder / "unet" / "config.json", SD1_UNET)
    write_json(folder / "vae" / "config.json", SD1_VAE)
    write_tokenizer(folder / "tokenizer", vocab, merges)


def write_sd2(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    write_json(folder / "model_index.json", SD2_MODEL_INDEX)
    write_json(folder / "scheduler" / "scheduler_config.json", SD2_SCHEDULER)
    write_json(folder / "text_encoder" / "config.json", SD2_TEXT_ENCODER)
    write_json(folder / "unet" / "config.json", SD2_UNET)
    write_json(folder / "vae" / "config.json", SD2_VAE)
    write_tokenizer(folder / "tokenizer", vocab, merges, pad_token=OPENCLIP_PAD)


def write_sdxl(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    write_json(folder / "model_index.json", SDXL_MODEL_INDEX)
    write_json(folder / "scheduler" / "scheduler_config.json", SDXL_SCHEDULER)
    write_json(folder / "text_encoder" / "config.json", SDXL_TEXT_ENCODER)
    write_json(folder / "text_encoder_2" / "config.json", SDXL_TEXT_ENCODER_2)
    write_json(folder / "unet" / "config.json", SDXL_UNET)
    write_json(folder / "vae" / "config.json", SDXL_VAE)
    write_tokenizer(folder / "tokenizer", vocab, merges)
    write_tokenizer(folder / "tokenizer_2", vocab, merges, pad_token=OPENCLIP_PAD)


def write_sdxl_refiner(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    write_json(folder / "model_index.json", SDXL_REFINER_MODEL_INDEX)
    write_json(folder / "scheduler" / "scheduler_config.json", SDXL_SCHEDULER)
    write_json(folder / "text_encoder_2" / "config.json", SDXL_TEXT_ENCODER_2)
    write_json(folder / "unet" / "config.json", SDXL_REFINER_UNET)
    write_json(folder / "vae" / "config.json", SDXL_VAE)
    write_tokenizer(folder / "tokenizer_2", vocab, merges, pad_token=OPENCLIP_PAD)


WRITERS = {"sd1": write_sd1, "sd2": write_sd2, "sdxl": write_sdxl, "sdxl_refiner": write_sdxl_refiner}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="configs folder (default: %(default)s)")
    args = parser.parse_args(argv)
    vocab, merges = clip_vocab_and_merges(clip_bpe_path())
    for family, write in WRITERS.items():
        write(args.out / family, vocab, merges)
        print(f"wrote {args.out / family} ({len(vocab)} tokens, {len(merges)} merges)")


if __name__ == "__main__":
    main()
