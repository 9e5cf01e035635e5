"""LoRA formats beyond the basics of test_lora.py: DoRA, (IA)³, norm, inpainting conv_in, SD2 / SDXL names, .pt files
and partially matching files.

Every expected merged weight is computed here from the documented math, never with the library's own helpers.
"""
import pytest
import torch
from safetensors.torch import save_file

from webui.engine.lora import (
    LoraPatcher,
    load_lora,
    named_modules,
    parse_lora,
)
from test_lora import assert_identical, snapshot
from webui.engine.models.tiny import tiny_modules

R, ALPHA = 4, 3.0
SCALE = ALPHA / R                 # 0.75: a missing or doubled alpha/rank shows
TE_MULT, UNET_MULT = 0.7, 1.3     # different, and ≠ 1, so a wrong multiplier shows

# SD1 targets (tiny sizes in the comments) and their kohya keys
TE_FC1 = "text_encoder.encoder.layers.0.mlp.fc1"                                   # Linear 37×32
UNET_FF2 = "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"         # Linear 32×128
UNET_CONV = "unet.down_blocks.1.resnets.0.conv1"                                   # Conv2d 64×32×3×3
UNET_TO_K = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"      # Linear 32×32, no bias
UNET_Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"         # Linear 32×32
LAYER_NORM = "unet.down_blocks.0.attentions.0.transformer_blocks.0.norm1"          # LayerNorm 32
GROUP_NORM = "unet.down_blocks.0.resnets.0.norm1"                                  # GroupNorm 32
KOHYA = {
    TE_FC1: "lora_te_text_model_encoder_layers_0_mlp_fc1",
    UNET_FF2: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2",
    UNET_CONV: "lora_unet_down_blocks_1_resnets_0_conv1",
    UNET_TO_K: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k",
    UNET_Q: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    LAYER_NORM: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_norm1",
    GROUP_NORM: "lora_unet_down_blocks_0_resnets_0_norm1",
}


# ---------- helpers ----------

def _g(seed):
    return torch.Generator().manual_seed(seed)


def components(family="sd1", inpainting=False):
    m = tiny_modules(seed=0, family=family, inpainting=inpainting)
    comps = {"unet": m.unet, "text_encoder": m.text_encoder, "text_encoder_2": m.text_encoder_2}
    return comps, named_modules(comps)


@pytest.fixture
def sd1():
    return components("sd1")


def mult_of(target):
    return TE_MULT if target.startswith("text_encoder") else UNET_MULT


def lora_pair(shape, g, rank=R):
    """Random (down, up) of a kohya LoRA (Linear) / LoCon (Conv2d: k×k down, 1×1 up) for a weight of `shape`."""
    if len(shape) == 4:
        return torch.randn(rank, *shape[1:], generator=g), torch.randn(shape[0], rank, 1, 1, generator=g)
    return torch.randn(rank, shape[1], generator=g), torch.randn(shape[0], rank, generator=g)


def updown(down, up):
    """up @ down, written out: ΔW[o, i, …] = Σ_r up[o, r] · down[r, i, …]."""
    return torch.einsum("or,ri...->oi...", up.reshape(up.shape[0], -1), down)


def lora_entries(key, down, up, alpha=ALPHA, down_name="lora_down.weight", up_name="lora_up.weight"):
    sd = {f"{key}.{down_name}": down, f"{key}.{up_name}": up}
    if alpha is not None:
        sd[f"{key}.alpha"] = torch.tensor(alpha)
    return sd


def write(tmp_path, name, sd):
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def check_merge(mods, parsed, expected, te=TE_MULT, unet=UNET_MULT):
    """Apply `parsed` at (te, unet): each target of `expected` ({target: (weight, bias or None for "unchanged")})
    must hold exactly that and differ from before, every other module stay bit-identical; restore() must put
    back every module bit for bit."""
    snap = snapshot(mods)
    patcher = LoraPatcher()
    assert patcher.apply(mods, [(parsed, te, unet)])
    for t, (w, b) in expected.items():
        assert not torch.equal(mods[t].weight, snap[t][0]), f"{t}: weight not changed"
        torch.testing.assert_close(mods[t].weight, w, rtol=1e-5, atol=1e-5, msg=lambda m, t=t: f"{t}: {m}")
        if b is None:
            if snap[t][1] is not None:
                assert torch.equal(mods[t].bias, snap[t][1]), f"{t}: bias changed"
        else:
            assert not torch.equal(mods[t].bias, snap[t][1]), f"{t}: bias not changed"
            torch.testing.assert_close(mods[t].bias, b, rtol=1e-5, atol=1e-5, msg=lambda m, t=t: f"{t} bias: {m}")
    assert_identical({k: m for k, m in mods.items() if k not in expected}, snap)
    patcher.restore()
    assert_identical(mods, snap)


# ---------- DoRA ----------

@pytest.mark.parametrize("convention", ["kohya_per_input", "lycoris_per_output", "lycoris_per_output_flat"])
def test_dora_rescales_merged_weight(convention, sd1, tmp_path):
    comps, mods = sd1
    g, sd, expected = _g(1), {}, {}
    for target in (TE_FC1, UNET_FF2, UNET_CONV):
        w = mods[target].weight.detach().clone()
        down, up = lora_pair(w.shape, g)
        sd |= lora_entries(KOHYA[target], down, up)
        merged = w + SCALE * updown(down, up)
        if convention == "kohya_per_input":          # one magnitude per input column: norm over all dims but 1
            dims = [d for d in range(w.dim()) if d != 1]
        else:                                         # one magnitude per output row: norm over all dims but 0
            dims = list(range(1, w.dim()))
        norm = torch.linalg.vector_norm(merged, dim=dims, keepdim=True)  # (1, in[, 1, 1]) or (out, 1[, 1, 1])
        magnitude = 0.5 + torch.rand(norm.shape, generator=g)
        assert magnitude.shape == ((1, w.shape[1]) if convention == "kohya_per_input" else (w.shape[0], 1)) \
            + (1,) * (w.dim() - 2)
        if convention == "lycoris_per_output_flat":
            magnitude = magnitude.reshape(w.shape[0])
            sd[KOHYA[target] + ".dora_scale"] = magnitude
            magnitude = magnitude.reshape(norm.shape)
        else:
            sd[KOHYA[target] + ".dora_scale"] = magnitude
        w_dora = merged * magnitude / norm
        expected[target] = (w + mult_of(target) * (w_dora - w), None)
    parsed = load_lora(write(tmp_path, convention, sd), comps)
    assert parsed.unmatched == []
    check_merge(mods, parsed, expected)


# ---------- (IA)³ ----------

@pytest.mark.parametrize("on_input, per_input", [
    (torch.tensor(1), True),                 # 0-dim
    (torch.tensor([1.0]), True),             # 1 element
    (torch.tensor(True), True),
    (torch.tensor(0), False),                # present but false: per output row
], ids=["0dim", "1elem", "bool", "false"])
def test_ia3_scales_rows_or_columns(on_input, per_input, sd1, tmp_path):
    comps, mods = sd1
    g = _g(2)
    w_k, w_fc = mods[UNET_TO_K].weight.detach().clone(), mods[TE_FC1].weight.detach().clone()
    vec_k = torch.randn(w_k.shape[0], generator=g)                            # per output row (no on_input)
    vec_fc = torch.randn(w_fc.shape[1] if per_input else w_fc.shape[0], generator=g)
    sd = {KOHYA[UNET_TO_K] + ".weight": vec_k,
          KOHYA[TE_FC1] + ".weight": vec_fc, KOHYA[TE_FC1] + ".on_input": on_input}
    delta_k = torch.stack([w_k[o] * vec_k[o] for o in range(w_k.shape[0])])
    if per_input:
        delta_fc = torch.stack([w_fc[:, i] * vec_fc[i] for i in range(w_fc.shape[1])], dim=1)
    else:
        delta_fc = torch.stack([w_fc[o] * vec_fc[o] for o in range(w_fc.shape[0])])
    parsed = load_lora(write(tmp_path, "ia3", sd), comps)
    assert parsed.unmatched == []
    assert {t: d.kind for t, d in parsed.deltas.items()} == {UNET_TO_K: "ia3", TE_FC1: "ia3"}
    check_merge(mods, parsed, {UNET_TO_K: (w_k + UNET_MULT * delta_k, None),
                               TE_FC1: (w_fc + TE_MULT * delta_fc, None)})


# ---------- norm ----------

@pytest.mark.parametrize("extra, weight_scale", [
    ({}, 1.0),
    ({"alpha": 8.0}, 1.0),      # no rank: alpha does not scale a norm delta
    ({"scale": 0.5}, 0.5),      # an explicit scale scales the weight delta, never the bias delta
], ids=["plain", "alpha", "scale"])
def test_norm_weight_and_bias(extra, weight_scale, sd1, tmp_path):
    comps, mods = sd1
    g, sd, expected = _g(3), {}, {}
    for target in (LAYER_NORM, GROUP_NORM):
        w, b = mods[target].weight.detach().clone(), mods[target].bias.detach().clone()
        w_norm, b_norm = torch.randn(w.shape, generator=g), torch.randn(b.shape, generator=g)
        sd[KOHYA[target] + ".w_norm"], sd[KOHYA[target] + ".b_norm"] = w_norm, b_norm
        sd |= {f"{KOHYA[target]}.{k}": torch.tensor(v) for k, v in extra.items()}
        expected[target] = (w + UNET_MULT * weight_scale * w_norm, b + UNET_MULT * b_norm)
    parsed = load_lora(write(tmp_path, "norm", sd), comps)
    assert parsed.unmatched == []
    assert {type(mods[t]).__name__ for t in parsed.deltas} == {"LayerNorm", "GroupNorm"}
    check_merge(mods, parsed, expected)


# ---------- inpainting conv_in ----------

@pytest.mark.parametrize("variant", [
    "locon",                                     # up@down flattened: reshaped to 4 channels, then padded
    "locon_cp",                                  # with lora_mid (CP/Tucker): the delta is 4-D already
])
def test_sd_locon_on_inpainting_conv_in(variant):
    comps, mods = components("sd1", inpainting=True)
    target = "unet.conv_in"
    w = mods[target].weight.detach().clone()
    assert w.shape[1] == 9
    g = _g(4)
    out, _, kh, kw = w.shape
    if variant == "locon":                       # a LoCon trained on a 4-channel SD UNet: k×k down, 1×1 up
        down, up = lora_pair((out, 4, kh, kw), g)
        sd = lora_entries("lora_unet_conv_in", down, up)
        delta = updown(down, up)
    else:                                        # ΔW[o, i, k, l] = Σ_{n,m} up[o, n] · mid[n, m, k, l] · down[m, i]
        down, up = torch.randn(R, 4, 1, 1, generator=g), torch.randn(out, R, 1, 1, generator=g)
        mid = torch.randn(R, R, kh, kw, generator=g)
        sd = lora_entries("lora_unet_conv_in", down, up) | {"lora_unet_conv_in.lora_mid.weight": mid}
        delta = torch.einsum("on,nmkl,mi->oikl", up[:, :, 0, 0], mid, down[:, :, 0, 0])
    assert delta.shape == (out, 4, kh, kw)
    parsed = parse_lora(sd, comps, name=variant)
    assert parsed.unmatched == []
    expected = w.clone()
    expected[:, :4] += UNET_MULT * SCALE * delta
    check_merge(mods, parsed, {target: (expected, None)})
    patcher = LoraPatcher()
    patcher.apply(mods, [(parsed, TE_MULT, UNET_MULT)])
    merged = mods[target].weight
    assert torch.equal(merged[:, 4:], w[:, 4:])                      # mask / masked-image channels untouched
    assert (merged[:, :4] != w[:, :4]).any()
    patcher.restore()


# ---------- SD2 / SDXL key names ----------

FAMILY_FILES = {  # (family, naming): {file module key: target}
    ("sd2", "kohya"): {
        "lora_te_text_model_encoder_layers_0_self_attn_v_proj": "text_encoder.encoder.layers.0.self_attn.v_proj",
        "lora_unet_down_blocks_0_attentions_0_proj_in": "unet.down_blocks.0.attentions.0.proj_in",   # Linear in SD2
        "lora_unet_output_blocks_2_1_proj_in": "unet.up_blocks.1.attentions.0.proj_in",               # LDM name
        "lora_unet_down_blocks_0_resnets_0_conv1": "unet.down_blocks.0.resnets.0.conv1",
    },
    ("sdxl", "kohya"): {
        "lora_unet_input_blocks_3_1_proj_in": "unet.down_blocks.1.attentions.0.proj_in",
        "lora_unet_input_blocks_1_0_in_layers_2": "unet.down_blocks.0.resnets.0.conv1",
        "lora_unet_middle_block_1_transformer_blocks_1_attn1_to_q":
            "unet.mid_block.attentions.0.transformer_blocks.1.attn1.to_q",
        "lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_k":
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
        "lora_unet_output_blocks_1_2_conv": "unet.up_blocks.0.upsamplers.0.conv",
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": "text_encoder.encoder.layers.0.self_attn.q_proj",
        "lora_te2_text_model_encoder_layers_0_mlp_fc1": "text_encoder_2.text_model.encoder.layers.0.mlp.fc1",
    },
    ("sdxl", "peft"): {
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k":
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k",
        "unet.up_blocks.0.attentions.1.proj_out": "unet.up_blocks.0.attentions.1.proj_out",
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": "text_encoder.encoder.layers.0.self_attn.q_proj",
        "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj":
            "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj",
    },
}


@pytest.mark.parametrize("family, naming", list(FAMILY_FILES), ids=["-".join(k) for k in FAMILY_FILES])
def test_family_key_names_merge_exactly(family, naming, tmp_path):
    comps, mods = components(family)
    g, sd, expected = _g(5), {}, {}
    for key, target in FAMILY_FILES[family, naming].items():
        w = mods[target].weight.detach().clone()
        down, up = lora_pair(w.shape, g)
        if naming == "peft":    # diffusers/PEFT: lora_A = down, lora_B = up, no alpha → scale 1
            sd |= lora_entries(key, down, up, alpha=None, down_name="lora_A.weight", up_name="lora_B.weight")
            scale = 1.0
        else:
            sd |= lora_entries(key, down, up)
            scale = SCALE
        expected[target] = (w + mult_of(target) * scale * updown(down, up), None)
    parsed = load_lora(write(tmp_path, f"{family}_{naming}", sd), comps)
    assert parsed.unmatched == []
    assert set(parsed.deltas) == set(expected)
    assert {mult_of(t) for t in expected} == {TE_MULT, UNET_MULT}   # both multipliers exercised
    check_merge(mods, parsed, expected)


# ---------- .pt files ----------

@pytest.mark.parametrize("suffix, wrap", [(".pt", False), (".ckpt", True)], ids=["pt", "ckpt_state_dict"])
def test_torch_file_same_as_safetensors(suffix, wrap, sd1, tmp_path):
    comps, mods = sd1
    g, sd, expected = _g(6), {}, {}
    for target in (TE_FC1, UNET_Q, UNET_CONV):
        w = mods[target].weight.detach().clone()
        down, up = lora_pair(w.shape, g)
        sd |= lora_entries(KOHYA[target], down, up)
        expected[target] = (w + mult_of(target) * SCALE * updown(down, up), None)
    pt_path = tmp_path / f"lora{suffix}"
    torch.save({"state_dict": sd} if wrap else sd, pt_path)
    from_pt = load_lora(pt_path, comps)
    from_st = load_lora(write(tmp_path, "lora", sd), comps)
    assert from_pt.unmatched == from_st.unmatched == []
    assert set(from_pt.deltas) == set(from_st.deltas) == set(expected)
    for t, d in from_pt.deltas.items():
        other = from_st.deltas[t]
        assert (d.kind, d.is_text, sorted(d.parts)) == (other.kind, other.is_text, sorted(other.parts))
        assert all(torch.equal(v, other.parts[k]) for k, v in d.parts.items())
    check_merge(mods, from_pt, expected)
    patcher = LoraPatcher()
    patcher.apply(mods, [(from_pt, TE_MULT, UNET_MULT)])
    merged_pt = snapshot(mods)
    patcher.apply(mods, [(from_st, TE_MULT, UNET_MULT)])
    assert_identical(mods, merged_pt)
    patcher.restore()


# ---------- partially matching files ----------

def test_partial_match_lists_unmatched_keys_and_merges_the_rest(sd1):
    comps, mods = sd1
    g, sd, expected = _g(7), {}, {}
    for target in (UNET_Q, TE_FC1):
        w = mods[target].weight.detach().clone()
        down, up = lora_pair(w.shape, g)
        sd |= lora_entries(KOHYA[target], down, up)
        expected[target] = (w + mult_of(target) * SCALE * updown(down, up), None)
    # the same to_q again under its LDM name: a second spelling of a module already taken, not merged twice
    dup_down, dup_up = lora_pair(mods[UNET_Q].weight.shape, g)
    duplicate = lora_entries("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", dup_down, dup_up)
    # a module the model does not have
    missing = lora_entries("lora_unet_down_blocks_3_attentions_0_proj_in", *lora_pair((32, 32), g))
    # a module that exists, with factors of the wrong size (another architecture's LoRA)
    wrong = lora_entries(KOHYA[UNET_TO_K], *lora_pair((64, 64), g))
    # half a LoRA: up without down
    half = {KOHYA[UNET_FF2] + ".lora_up.weight": torch.randn(32, R, generator=g)}
    # not a module at all: an embedding bundled into the file
    bundle = {"bundle_emb.cat.string_to_param.*": torch.randn(1, 32, generator=g)}
    sd |= duplicate | missing | wrong | half | bundle
    parsed = parse_lora(sd, comps, name="partial")
    assert parsed.unmatched == sorted([*duplicate, *missing, *wrong, *half, *bundle])
    assert set(parsed.deltas) == set(expected)
    check_merge(mods, parsed, expected)
