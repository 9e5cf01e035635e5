"""Which architecture a single-file checkpoint is, every size read from tensor shapes, never from names.

The family follows from the structure of the file (peers.md §1.2): which text towers it holds and in which
layout (OpenAI CLIP as transformers keys, OpenCLIP in its own layout), and whether the UNet has SDXL's
size/crop embedding (label_emb). Every size (channels, levels, depths, widths, layer counts) is read from
shapes; what shapes cannot say (heads, scaling factor, betas) is the family's convention (families/).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .architecture import Architecture, ArchitectureError, make_architecture
from .families import ModelFamily, all_families, family_for_towers
from .ldm_layout import OPENCLIP_PREFIX, TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX

# Older SD1 files saved the CLIP text model without transformers' `text_model.` level.
_CLIP_PREFIXES = (TEXT_PREFIX, "cond_stage_model.transformer.")
_CONDITIONER = "conditioner.embedders."
_PARAMETERIZATION = re.compile(r"""^\s*parameterization\s*:\s*["']?([A-Za-z0-9_]+)""", re.MULTILINE)


# ---------------------------------------------------------------------------------------------- helpers

def _shape(sd: Mapping, key: str, what: str) -> tuple[int, ...]:
    tensor = sd.get(key)
    if tensor is None:
        raise ArchitectureError(f"not a complete Stable Diffusion checkpoint: {what} tensor {key} is missing")
    return tuple(tensor.shape)


def _indices(keys, pattern: str) -> list[int]:
    """Sorted distinct integers captured by `pattern` (one group) at the start of any key."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _contiguous(found: list[int], what: str) -> int:
    if not found or found != list(range(len(found))):
        raise ArchitectureError(f"inconsistent checkpoint: {what} numbered {found[:12]}, expected 0..n-1")
    return len(found)


# ---------------------------------------------------------------------------------------------- UNet

def _depth(keys: list[str], block: str) -> int:
    """Transformer blocks in the attention module `block` (a key prefix ending in '.'), 0 if it has none."""
    return len(_indices(keys, re.escape(block) + r"transformer_blocks\.(\d+)\."))


def _unet_sizes(sd: Mapping) -> dict:
    keys = [k for k in sd if k.startswith(UNET_PREFIX)]
    p = re.escape(UNET_PREFIX)
    n_in = _contiguous(_indices(keys, p + r"input_blocks\.(\d+)\."), "UNet input_blocks")
    ops = _indices(keys, p + r"input_blocks\.(\d+)\.0\.op\.")
    levels = len(ops) + 1
    per_level, rest = divmod(n_in - 1 - len(ops), levels)
    expected_ops = [(level + 1) * (per_level + 1) for level in range(levels - 1)]
    if rest or per_level < 1 or ops != expected_ops:
        raise ArchitectureError(f"inconsistent UNet: {n_in} input blocks with downsamplers at {ops}")
    n_out = _contiguous(_indices(keys, p + r"output_blocks\.(\d+)\."), "UNet output_blocks")
    if n_out != levels * (per_level + 1):
        raise ArchitectureError(f"inconsistent UNet: {n_out} output blocks for {levels} levels of {per_level}")

    channels, down_types, depths, linear = [], [], [], set()
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        channels.append(_shape(sd, f"{UNET_PREFIX}input_blocks.{first}.0.out_layers.3.weight", "UNet")[0])
        attn = [f"{UNET_PREFIX}input_blocks.{first + j}.1." for j in range(per_level)]
        # Output blocks of this level: LDM numbers them from the lowest resolution up.
        up_first = (levels - 1 - level) * (per_level + 1)
        attn += [f"{UNET_PREFIX}output_blocks.{up_first + j}.1." for j in range(per_level + 1)]
        level_depths = {_depth(keys, a) for a in attn}
        if len(level_depths) > 1:
            raise ArchitectureError(f"unsupported UNet: level {level} mixes transformer depths "
                                    f"{sorted(level_depths)} across its blocks")
        depth = level_depths.pop()
        depths.append(depth)
        down_types.append("CrossAttnDownBlock2D" if depth else "DownBlock2D")
        if depth:
            linear.add(len(_shape(sd, attn[0] + "proj_in.weight", "UNet")) == 2)
    mid = f"{UNET_PREFIX}middle_block.1."
    context_dim = _shape(sd, mid + "transformer_blocks.0.attn2.to_k.weight", "UNet mid-block cross-attention")[1]
    linear.add(len(_shape(sd, mid + "proj_in.weight", "UNet")) == 2)
    mid_depth = _depth(keys, mid)
    if len(linear) > 1:
        raise ArchitectureError("unsupported UNet: mixes linear and convolutional transformer projections")
    in_shape = _shape(sd, UNET_PREFIX + "input_blocks.0.0.weight", "UNet")
    return {
        "in_channels": in_shape[1],
        "out_channels": _shape(sd, UNET_PREFIX + "out.2.weight", "UNet")[0],
        "block_out_channels": channels,
        "layers_per_block": per_level,
        "down_block_types": down_types,
        "transformer_layers_per_block": _transformer_layers(depths, mid_depth),
        "cross_attention_dim": context_dim,
        "use_linear_projection": linear.pop(),
    }


def _transformer_layers(depths: list[int], mid_depth: int) -> int | list[int]:
    """diffusers' transformer_layers_per_block: one int where all attention agrees (SD1/SD2, refiner: as the
    published configs), else per level with 1 at attention-less levels (SDXL: [1, 2, 10]). diffusers gives the
    mid block the last level's value, so the last entry must be the mid depth."""
    used = {d for d in depths if d}
    if used <= {mid_depth}:
        return mid_depth
    if depths[-1] and depths[-1] != mid_depth:
        raise ArchitectureError(f"unsupported UNet: mid-block depth {mid_depth} differs from the lowest level's "
                                f"{depths[-1]}")
    return [d or 1 for d in depths[:-1]] + [mid_depth]


def check_channels(unet: dict, latent: int) -> None:
    """Plain (4 = latent), inpainting (9 = latent + mask + masked-image latent); refuse other variants clearly."""
    n_in, n_out = unet["in_channels"], unet["out_channels"]
    if n_out != latent:
        raise ArchitectureError(f"unsupported UNet: it predicts {n_out} channels but the VAE has {latent} latent "
                                "channels")
    if n_in in (latent, 2 * latent + 1):
        return
    known = {latent + 1: "a depth-conditioned model (SD2 depth2img: latent + depth map)",
             2 * latent: "an instruct-pix2pix model (latent + image latent)"}
    what = known.get(n_in, "no known Stable Diffusion variant")
    raise ArchitectureError(f"unsupported UNet: {n_in} input channels is {what}; supported are {latent} "
                            f"(text-to-image) and {2 * latent + 1} (inpainting)")


# ---------------------------------------------------------------------------------------------- VAE

def _vae_sizes(sd: Mapping) -> dict:
    keys = [k for k in sd if k.startswith(VAE_PREFIX)]
    if not keys:
        raise ArchitectureError(f"not a complete Stable Diffusion checkpoint: no VAE weights ({VAE_PREFIX}*) found")
    enc = VAE_PREFIX + "encoder."
    levels = _contiguous(_indices(keys, re.escape(enc) + r"down\.(\d+)\."), "VAE encoder levels")
    per_level = _contiguous(_indices(keys, re.escape(enc) + r"down\.0\.block\.(\d+)\."), "VAE encoder blocks")
    latent = _shape(sd, VAE_PREFIX + "decoder.conv_in.weight", "VAE")[1]
    if _shape(sd, enc + "conv_out.weight", "VAE")[0] != 2 * latent:
        raise ArchitectureError(f"inconsistent VAE: encoder output is not 2 × {latent} latent channels")
    return {
        "in_channels": _shape(sd, enc + "conv_in.weight", "VAE")[1],
        "out_channels": _shape(sd, VAE_PREFIX + "decoder.conv_out.weight", "VAE")[0],
        "block_out_channels": [_shape(sd, f"{enc}down.{i}.block.0.conv2.weight", "VAE")[0] for i in range(levels)],
        "layers_per_block": per_level,
        "latent_channels": latent,
    }


# ---------------------------------------------------------------------------------------------- text towers

def clip_prefix(sd: Mapping, prefixes=_CLIP_PREFIXES) -> str | None:
    """The prefix under which a transformers-layout CLIP text model is stored, if any."""
    for prefix in prefixes:
        if prefix + "embeddings.token_embedding.weight" in sd:
            return prefix
    return None


def _clip_sizes(sd: Mapping, prefix: str) -> dict:
    vocab, hidden = _shape(sd, prefix + "embeddings.token_embedding.weight", "text encoder")
    keys = [k for k in sd if k.startswith(prefix)]
    layers = _contiguous(_indices(keys, re.escape(prefix) + r"encoder\.layers\.(\d+)\."), "text encoder layers")
    return {
        "hidden_size": hidden,
        "vocab_size": vocab,
        "max_position_embeddings": _shape(sd, prefix + "embeddings.position_embedding.weight", "text encoder")[0],
        "num_hidden_layers": layers,
        "intermediate_size": _shape(sd, prefix + "encoder.layers.0.mlp.fc1.weight", "text encoder")[0],
    }


def _openclip_sizes(sd: Mapping, prefix: str, projection: bool) -> dict:
    vocab, hidden = _shape(sd, prefix + "token_embedding.weight", "OpenCLIP text encoder")
    keys = [k for k in sd if k.startswith(prefix)]
    block = re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."
    layers = _contiguous(_indices(keys, block), "OpenCLIP text encoder resblocks")
    in_proj = _shape(sd, prefix + "transformer.resblocks.0.attn.in_proj_weight", "OpenCLIP text encoder")
    if in_proj != (3 * hidden, hidden):
        raise ArchitectureError(f"inconsistent OpenCLIP text encoder: in_proj is {list(in_proj)}, expected "
                                f"[{3 * hidden}, {hidden}] for width {hidden}")
    sizes = {
        "hidden_size": hidden,
        "vocab_size": vocab,
        "max_position_embeddings": _shape(sd, prefix + "positional_embedding", "OpenCLIP text encoder")[0],
        "num_hidden_layers": layers,
        "intermediate_size": _shape(sd, prefix + "transformer.resblocks.0.mlp.c_fc.weight", "OpenCLIP")[0],
    }
    if projection:  # SDXL's pooled embedding: OpenCLIP stores the projection as [width, embed_dim]
        sizes["projection_dim"] = _shape(sd, prefix + "text_projection", "OpenCLIP text encoder (SDXL)")[1]
    return sizes


def _towers(sd: Mapping) -> tuple[str, list[str]]:
    """('cond_stage', layouts) for SD1/SD2-style files, ('conditioner', layouts per embedder) for SDXL-style."""
    layouts = []
    if clip_prefix(sd):
        layouts.append("clip")
    if OPENCLIP_PREFIX + "token_embedding.weight" in sd:
        layouts.append("openclip")
    embedders = _indices(sd, re.escape(_CONDITIONER) + r"(\d+)\.")
    if layouts and embedders:
        raise ArchitectureError("inconsistent checkpoint: text encoders under both cond_stage_model.* and "
                                "conditioner.embedders.*")
    if layouts:
        return "cond_stage", layouts
    found = []
    for i in embedders:
        base = f"{_CONDITIONER}{i}."
        if clip_prefix(sd, (base + "transformer.text_model.", base + "transformer.")):
            found.append("clip")
        elif base + "model.token_embedding.weight" in sd:
            found.append("openclip")
        else:
            raise ArchitectureError(f"unsupported conditioner: embedder {i} ({base}*) is neither a CLIP nor an "
                                    "OpenCLIP text encoder")
    return "conditioner", found


# ---------------------------------------------------------------------------------------------- prediction

def parameterization(yaml_text: str | None) -> str | None:
    """The prediction type an LDM .yaml states (`parameterization: "v"` / `eps`), or None where it says nothing."""
    if not yaml_text:
        return None
    m = _PARAMETERIZATION.search(yaml_text)
    if not m:
        return None
    value = m.group(1).lower()
    if value == "v":
        return "v_prediction"
    if value in ("eps", "epsilon"):
        return "epsilon"
    raise ArchitectureError(f"unsupported parameterization {m.group(1)!r} in the checkpoint's .yaml "
                            "(supported: eps, v)")


# ---------------------------------------------------------------------------------------------- detect

def detect(state_dict: Mapping[str, torch.Tensor], yaml_text: str | None = None) -> Architecture:
    """The architecture of a single-file LDM-layout state dict, every size read from tensor shapes.

    `yaml_text` is the text of a `<checkpoint>.yaml` next to the file, if any (architecture.sidecar_yaml):
    its `parameterization` overrides the prediction type guessed from the weights.
    """
    sd = state_dict
    if not any(k.startswith(UNET_PREFIX) for k in sd):
        raise ArchitectureError(f"not a Stable Diffusion checkpoint: no UNet weights ({UNET_PREFIX}*) found")
    if UNET_PREFIX + "label_emb.weight" in sd:
        raise ArchitectureError("unsupported architecture: a class-conditioned UNet (label_emb as an embedding "
                                "table, e.g. the SD2 x4 upscaler)")
    for marker in ("edm_mean", "edm_vpred.sigma_max"):
        if marker in sd:  # ComfyUI's markers (supported_models.py): a continuous-σ EDM model, not DDPM's 1000 steps
            raise ArchitectureError(f"unsupported architecture: an EDM-parameterised model ({marker}: Playground "
                                    "v2.5, CosXL) needs a sampler schedule this UI does not have")
    adm = sd.get(UNET_PREFIX + "label_emb.0.0.weight")
    where, layouts = _towers(sd)
    if not layouts:
        raise ArchitectureError("not a complete Stable Diffusion checkpoint: no CLIP text encoder "
                                f"({TEXT_PREFIX}embeddings.token_embedding.weight, {OPENCLIP_PREFIX}* or "
                                f"{_CONDITIONER}*) found")
    family = family_for_towers(where, tuple(layouts))
    if family is None:
        known = "; ".join(f"{f.label}: {' + '.join(f.tower_layouts)} under {f.container}" for f in all_families())
        raise ArchitectureError(f"unsupported architecture: text encoders {'+'.join(layouts)} under {where} "
                                f"match no known family ({known})")
    if (adm is not None) != (family.n_time_ids > 0):
        raise ArchitectureError(
            "unsupported architecture: an SDXL-style conditioner without the UNet's size embedding (label_emb)"
            if adm is None else
            f"unsupported architecture: a {family.label}-style text encoder with a UNet size/image embedding "
            "(label_emb), e.g. SD2 unCLIP")

    _check_no_empty_tensors(sd, family)
    unet = _unet_sizes(sd)
    vae = _vae_sizes(sd)
    check_channels(unet, vae["latent_channels"])
    text, text_2 = (_tower_sizes(sd, tower) if tower else None for tower in family.towers)
    _check_plausible(unet, vae, text, text_2)
    widths = [t["hidden_size"] for t in (text, text_2) if t]
    if sum(widths) != unet["cross_attention_dim"]:
        raise ArchitectureError(f"inconsistent checkpoint: text encoder width {' + '.join(map(str, widths))} "
                                f"does not match the UNet's cross-attention dim {unet['cross_attention_dim']}")
    if family.n_time_ids:
        unet.update(_size_embedding(adm.shape, text_2["projection_dim"], family))

    prediction = parameterization(yaml_text)
    if prediction is None:
        prediction = "v_prediction" if family.looks_v(sd, unet) else "epsilon"
    return make_architecture(family.key, unet=unet, vae=vae, text_encoder=text, text_encoder_2=text_2,
                             prediction_type=prediction)


# Far above any published model (SDXL: 1280 UNet channels, bigG 1280 wide, 32 layers); a file claiming more is
# broken or hostile, and building it would try to allocate terabytes before any weight is read.
MAX_WIDTH, MAX_LAYERS = 16384, 256


def _check_no_empty_tensors(sd: Mapping, family: ModelFamily):
    prefixes = (UNET_PREFIX, VAE_PREFIX, *(t.prefix.split("transformer.")[0] for t in family.towers if t))
    for key, tensor in sd.items():
        if key.startswith(prefixes) and tensor.dim() > 0 and 0 in tensor.shape:
            raise ArchitectureError(f"broken checkpoint: tensor {key} has an empty dimension {tuple(tensor.shape)}")


def _check_plausible(unet: dict, vae: dict, *texts: dict | None):
    widths = {"UNet channels": max(unet["block_out_channels"]), "UNet cross-attention width":
              unet["cross_attention_dim"], "VAE channels": max(vae["block_out_channels"])}
    for i, text in enumerate(t for t in texts if t):
        widths[f"text encoder {i + 1} width"] = text["hidden_size"]
        widths[f"text encoder {i + 1} vocabulary / 64"] = text["vocab_size"] // 64
        if text["num_hidden_layers"] > MAX_LAYERS:
            raise ArchitectureError(f"implausible checkpoint: text encoder {i + 1} has {text['num_hidden_layers']} "
                                    f"layers (at most {MAX_LAYERS})")
    for what, width in widths.items():
        if width > MAX_WIDTH:
            raise ArchitectureError(f"implausible checkpoint: {what} {width} (at most {MAX_WIDTH}); the file is "
                                    "broken or not a Stable Diffusion model")


def _tower_sizes(sd: Mapping, tower) -> dict:
    if tower.layout == "clip":
        return _clip_sizes(sd, clip_prefix(sd, (tower.prefix, tower.prefix.removesuffix("text_model."))))
    return _openclip_sizes(sd, tower.prefix, projection=tower.pooled)


def _size_embedding(shape: tuple[int, ...], pooled: int, family: ModelFamily) -> dict:
    """SDXL's add_embedding input = pooled text embedding + n_time_ids sinusoids of addition_time_embed_dim each."""
    adm = shape[1]
    per_id, rest = divmod(adm - pooled, family.n_time_ids)
    if rest or per_id <= 0 or per_id % 2:
        raise ArchitectureError(f"inconsistent {family.label} UNet: its size embedding takes {adm} inputs, which "
                                f"is not the pooled text width {pooled} + {family.n_time_ids} × an even "
                                "time-embedding width "
                                f"(2816 = 1280 + 6 × 256 for SDXL, 2560 = 1280 + 5 × 256 for the refiner)")
    return {"addition_embed_type": "text_time", "projection_class_embeddings_input_dim": adm,
            "addition_time_embed_dim": per_id}
