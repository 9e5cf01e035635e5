"""LoRA parsing (kohya LoRA/LoCon, LoHa, LoKr, full diff), key mapping and merge/restore on the tiny SD1 model."""
import pytest
import torch
from safetensors.torch import save_file

from webui.engine.lora import (
    LoraError,
    LoraPatcher,
    build_key_map,
    load_lora,
    named_modules,
    parse_lora,
)
from webui.engine.models.tiny import tiny_modules

Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
CONV = "unet.down_blocks.0.resnets.0.conv1"          # 3×3
PROJ = "unet.down_blocks.0.attentions.0.proj_in"     # 1×1
TE_Q = "text_encoder.encoder.layers.0.self_attn.q_proj"
TE_FC = "text_encoder.encoder.layers.0.mlp.fc1"
KEYS = {
    Q: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    CONV: "lora_unet_down_blocks_0_resnets_0_conv1",
    PROJ: "lora_unet_down_blocks_0_attentions_0_proj_in",
    TE_Q: "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    TE_FC: "lora_te_encoder_layers_0_mlp_fc1",
}
R = 2
ALPHA = 1.0


@pytest.fixture
def comps():
    m = tiny_modules(seed=0)
    return {"unet": m.unet, "text_encoder": m.text_encoder}


@pytest.fixture
def mods(comps):
    return named_modules(comps)


def snapshot(mods):
    return {k: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
            for k, m in mods.items()}


def assert_identical(mods, snap):
    for k, m in mods.items():
        w, b = snap[k]
        assert torch.equal(m.weight, w), k
        if b is not None:
            assert torch.equal(m.bias, b), k


def _g(seed):
    return torch.Generator().manual_seed(seed)


# ---------- file builders: (state dict, {target: expected delta at multiplier 1, scale included}) ----------

def make_lora(mods, seed=0, targets=(Q, CONV, PROJ, TE_Q, TE_FC)):
    g, sd, exp = _g(seed), {}, {}
    for t in targets:
        w = mods[t].weight
        out, inp = w.shape[:2]
        if w.dim() == 4:   # LoCon: k×k down, 1×1 up
            down = torch.randn(R, inp, *w.shape[2:], generator=g)
            up = torch.randn(out, R, 1, 1, generator=g)
        else:
            down, up = torch.randn(R, inp, generator=g), torch.randn(out, R, generator=g)
        sd[KEYS[t] + ".lora_down.weight"], sd[KEYS[t] + ".lora_up.weight"] = down, up
        sd[KEYS[t] + ".alpha"] = torch.tensor(ALPHA)
        exp[t] = (ALPHA / R) * (up.reshape(out, R) @ down.reshape(R, -1)).reshape(w.shape)
    return sd, exp


def make_locon_mid(mods, seed=0):
    w = mods[CONV].weight
    out, inp, kh, kw = w.shape
    g = _g(seed)
    up, down = torch.randn(out, R, 1, 1, generator=g), torch.randn(R, inp, 1, 1, generator=g)
    mid = torch.randn(R, R, kh, kw, generator=g)
    k = KEYS[CONV]
    sd = {k + ".lora_up.weight": up, k + ".lora_down.weight": down, k + ".lora_mid.weight": mid,
          k + ".alpha": torch.tensor(ALPHA)}
    exp = torch.zeros(out, inp, kh, kw)
    for n in range(R):
        for m in range(R):
            exp += up[:, n, 0, 0][:, None, None, None] * down[m, :, 0, 0][None, :, None, None] * mid[n, m]
    return sd, {CONV: exp * ALPHA / R}


def make_loha(mods, seed=0, targets=(Q, CONV, TE_Q)):
    g, sd, exp = _g(seed), {}, {}
    for t in targets:
        w = mods[t].weight
        out, rest = w.shape[0], w[0].numel()
        p = {n: torch.randn(*s, generator=g) for n, s in
             (("hada_w1_a", (out, R)), ("hada_w1_b", (R, rest)), ("hada_w2_a", (out, R)), ("hada_w2_b", (R, rest)))}
        sd.update({f"{KEYS[t]}.{n}": v for n, v in p.items()})
        sd[KEYS[t] + ".alpha"] = torch.tensor(ALPHA)
        exp[t] = ((p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])).reshape(w.shape) * ALPHA / R
    return sd, exp


def make_loha_tucker(mods, seed=0):
    w = mods[CONV].weight
    out, inp, kh, kw = w.shape
    g = _g(seed)
    p = {"hada_w1_a": (R, out), "hada_w1_b": (R, inp), "hada_w2_a": (R, out), "hada_w2_b": (R, inp),
         "hada_t1": (R, R, kh, kw), "hada_t2": (R, R, kh, kw)}
    p = {n: torch.randn(*s, generator=g) for n, s in p.items()}
    sd = {f"{KEYS[CONV]}.{n}": v for n, v in p.items()}

    def rebuild(t, a, b):  # W[o,i,k,l] = Σ_{n,m} t[n,m,k,l] a[n,o] b[m,i]
        return torch.einsum("nmkl,no,mi->oikl", t, a, b)
    exp = rebuild(p["hada_t1"], p["hada_w1_a"], p["hada_w1_b"]) * rebuild(p["hada_t2"], p["hada_w2_a"], p["hada_w2_b"])
    return sd, {CONV: exp}  # no alpha → scale 1


def make_lokr(mods, seed=0):
    g, sd, exp = _g(seed), {}, {}
    # Linear 32×32: full w1 (4×4), factored w2 (8×R)(R×8)
    w = mods[Q].weight
    w1, a, b = torch.randn(4, 4, generator=g), torch.randn(8, R, generator=g), torch.randn(R, 8, generator=g)
    sd.update({KEYS[Q] + ".lokr_w1": w1, KEYS[Q] + ".lokr_w2_a": a, KEYS[Q] + ".lokr_w2_b": b,
               KEYS[Q] + ".alpha": torch.tensor(ALPHA)})
    exp[Q] = torch.kron(w1, a @ b) * ALPHA / R
    assert exp[Q].shape == w.shape
    # Conv 32×32×3×3: factored w1, full 4-D w2
    cw = mods[CONV].weight
    w1a, w1b = torch.randn(4, R, generator=g), torch.randn(R, 4, generator=g)
    w2 = torch.randn(8, 8, 3, 3, generator=g)
    sd.update({KEYS[CONV] + ".lokr_w1_a": w1a, KEYS[CONV] + ".lokr_w1_b": w1b, KEYS[CONV] + ".lokr_w2": w2,
               KEYS[CONV] + ".alpha": torch.tensor(ALPHA)})
    exp[CONV] = torch.kron((w1a @ w1b)[:, :, None, None], w2) * ALPHA / R
    assert exp[CONV].shape == cw.shape
    # Text encoder fc1 (37×32) can't be split: w1 1×1, w2 full.
    return sd, exp


def make_lokr_tucker(mods, seed=0):
    g = _g(seed)
    w1 = torch.randn(4, 4, generator=g)
    a, b, t2 = torch.randn(R, 8, generator=g), torch.randn(R, 8, generator=g), torch.randn(R, R, 3, 3, generator=g)
    k = KEYS[CONV]
    sd = {k + ".lokr_w1": w1, k + ".lokr_w2_a": a, k + ".lokr_w2_b": b, k + ".lokr_t2": t2,
          k + ".alpha": torch.tensor(ALPHA)}
    w2 = torch.einsum("nmkl,no,mi->oikl", t2, a, b)
    return sd, {CONV: torch.kron(w1[:, :, None, None], w2.contiguous()) * ALPHA / R}


def make_full(mods, seed=0):
    g = _g(seed)
    w, b = mods[TE_FC].weight, mods[TE_FC].bias
    diff, diff_b = torch.randn(w.shape, generator=g), torch.randn(b.shape, generator=g)
    return {KEYS[TE_FC] + ".diff": diff, KEYS[TE_FC] + ".diff_b": diff_b}, {TE_FC: diff}, {TE_FC: diff_b}


BUILDERS = {"lora": make_lora, "locon_mid": make_locon_mid, "loha": make_loha, "loha_tucker": make_loha_tucker,
            "lokr": make_lokr, "lokr_tucker": make_lokr_tucker}


def write(tmp_path, name, sd):
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


# ---------- key map ----------

def test_key_map_is_exact(comps, mods):
    km = build_key_map(comps)
    for target, key in KEYS.items():
        assert km[key] == target
    assert km["lora_te_encoder_layers_0_self_attn_q_proj"] == TE_Q
    assert km["lora_te_text_model_encoder_layers_1_mlp_fc2"] == "text_encoder.encoder.layers.1.mlp.fc2"
    assert km["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"] == \
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
    # LDM-named (sgm) kohya keys reach the same modules
    assert km["lora_unet_input_blocks_1_1_proj_in"] == PROJ
    assert km["lora_unet_input_blocks_1_0_in_layers_2"] == CONV
    assert set(km.values()) == set(mods)   # every patchable module is reachable, nothing else


# ---------- formats ----------

@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_formats_merge_exactly_and_restore(fmt, comps, mods, tmp_path):
    sd, exp = BUILDERS[fmt](mods)
    parsed = load_lora(write(tmp_path, fmt, sd), comps)
    assert parsed.unmatched == []
    assert set(parsed.deltas) == set(exp)
    snap = snapshot(mods)
    patcher = LoraPatcher()
    te, unet = 0.7, 1.3
    assert patcher.apply(mods, [(parsed, te, unet)])
    for t, d in exp.items():
        mult = te if t.startswith("text_encoder") else unet
        torch.testing.assert_close(mods[t].weight, snap[t][0] + mult * d, rtol=1e-5, atol=1e-5)
    untouched = set(mods) - set(exp)
    assert_identical({k: mods[k] for k in untouched}, snap)
    patcher.restore()
    assert_identical(mods, snap)


def test_full_diff_with_bias(comps, mods):
    sd, exp, exp_b = make_full(mods)
    parsed = parse_lora(sd, comps, name="full")
    snap = snapshot(mods)
    patcher = LoraPatcher()
    patcher.apply(mods, [(parsed, 0.5, 1.0)])
    torch.testing.assert_close(mods[TE_FC].weight, snap[TE_FC][0] + 0.5 * exp[TE_FC])
    torch.testing.assert_close(mods[TE_FC].bias, snap[TE_FC][1] + 0.5 * exp_b[TE_FC])
    patcher.restore()
    assert_identical(mods, snap)


def test_peft_names_and_unmatched_keys_collected(comps, mods):
    sd, exp = make_lora(mods, targets=(Q,))
    peft = {"unet." + Q[5:] + ".lora_A.weight": sd[KEYS[Q] + ".lora_down.weight"],
            "unet." + Q[5:] + ".lora_B.weight": sd[KEYS[Q] + ".lora_up.weight"],
            "lora_unet_nonexistent_block.lora_up.weight": torch.zeros(2, 2),
            "bundle_emb.cat.string_to_param.*": torch.zeros(1, 32)}
    parsed = parse_lora(peft, comps, name="peft")
    assert set(parsed.deltas) == {Q}
    torch.testing.assert_close(parsed.deltas[Q].compute(mods[Q].weight)[0], exp[Q] * R / ALPHA)  # no alpha → scale 1
    assert parsed.unmatched == sorted(["lora_unet_nonexistent_block.lora_up.weight", "bundle_emb.cat.string_to_param.*"])


# ---------- patcher behaviour ----------

def test_weight_zero_leaves_model_unchanged(comps, mods):
    parsed = parse_lora(make_lora(mods)[0], comps)
    snap = snapshot(mods)
    patcher = LoraPatcher()
    patcher.apply(mods, [(parsed, 0.0, 0.0)])
    assert_identical(mods, snap)
    # te 0 / unet 1: text encoder untouched
    patcher.apply(mods, [(parsed, 0.0, 1.0)])
    assert torch.equal(mods[TE_Q].weight, snap[TE_Q][0])
    assert not torch.equal(mods[Q].weight, snap[Q][0])
    patcher.restore()
    assert_identical(mods, snap)


def test_two_loras_add_and_same_set_is_noop(comps, mods):
    sd1, e1 = make_lora(mods, seed=1)
    sd2, e2 = make_loha(mods, seed=2)
    a, b = parse_lora(sd1, comps, name="a"), parse_lora(sd2, comps, name="b")
    snap = snapshot(mods)
    patcher = LoraPatcher()
    assert patcher.apply(mods, [(a, 1.0, 0.5), (b, 1.0, 2.0)])
    for t in set(e1) | set(e2):
        mult1 = 1.0 if t.startswith("text") else 0.5
        mult2 = 1.0 if t.startswith("text") else 2.0
        expected = snap[t][0] + mult1 * e1.get(t, 0) + mult2 * e2.get(t, 0)
        torch.testing.assert_close(mods[t].weight, expected, rtol=1e-5, atol=1e-5)
    merged = snapshot(mods)
    assert not patcher.apply(mods, [(a, 1.0, 0.5), (b, 1.0, 2.0)])   # same set: nothing done
    assert_identical(mods, merged)
    # a different set restores first: result is the base + b alone
    assert patcher.apply(mods, [(b, 1.0, 1.0)])
    for t in e2:
        torch.testing.assert_close(mods[t].weight, snap[t][0] + e2[t], rtol=1e-5, atol=1e-5)
    assert torch.equal(mods[PROJ].weight, snap[PROJ][0])    # only `a` touched proj_in
    patcher.apply(mods, [])
    assert_identical(mods, snap)


def test_fp16_weights_restore_bit_identical(comps, mods):
    comps["unet"].half()
    comps["text_encoder"].half()
    parsed = parse_lora(make_lora(mods)[0], comps)
    snap = snapshot(mods)
    patcher = LoraPatcher()
    patcher.apply(mods, [(parsed, 1.0, 1.0)])
    assert mods[Q].weight.dtype == torch.float16
    assert not torch.equal(mods[Q].weight, snap[Q][0])
    patcher.restore()
    assert_identical(mods, snap)


def test_wrong_architecture_raises_and_leaves_weights(comps, mods, tmp_path):
    # SDXL-style names that the tiny SD1 model does not have
    sd = {f"lora_te2_text_model_encoder_layers_{i}_self_attn_q_proj.lora_up.weight": torch.zeros(64, 2)
          for i in range(8)}
    sd["lora_unet_down_blocks_2_attentions_0_proj_in.lora_down.weight"] = torch.zeros(2, 32)
    with pytest.raises(LoraError, match=r"none of its 9 keys.*e\.g\. .*lora_te2_.*…"):
        load_lora(write(tmp_path, "xl", sd), comps)
    # right names, wrong shapes (e.g. an SD2 LoRA on SD1)
    bad = {KEYS[Q] + ".lora_up.weight": torch.ones(64, 2), KEYS[Q] + ".lora_down.weight": torch.ones(2, 64)}
    with pytest.raises(LoraError, match="does not fit"):
        parse_lora(bad, comps, name="sd2")
    # a parsed LoRA for another model: apply refuses before touching anything, current set kept
    other = tiny_modules(seed=0, family="sdxl")
    xl = parse_lora(make_xl_lora(other), {"unet": other.unet, "text_encoder": other.text_encoder,
                                          "text_encoder_2": other.text_encoder_2})
    good = parse_lora(make_lora(mods)[0], comps, name="good")
    patcher = LoraPatcher()
    snap = snapshot(mods)
    with pytest.raises(LoraError, match="does not fit the loaded model"):
        patcher.apply(mods, [(good, 1.0, 1.0), (xl, 1.0, 1.0)])
    assert_identical(mods, snap)
    assert not patcher.active


def make_xl_lora(m):
    w = dict(m.text_encoder_2.named_modules())["text_model.encoder.layers.0.self_attn.q_proj"].weight
    return {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.ones(w.shape[0], 2),
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.ones(2, w.shape[1])}


def test_corrupt_file_clear_error(comps, tmp_path):
    for name in ("broken.safetensors", "broken.pt"):
        path = tmp_path / name
        path.write_bytes(b"\x00garbage, not a LoRA" * 10)
        with pytest.raises(LoraError, match=f"cannot read LoRA file {name}"):
            load_lora(path, comps)
    with pytest.raises(LoraError, match="cannot read LoRA file missing.safetensors"):
        load_lora(tmp_path / "missing.safetensors", comps)


def test_on_loaded_manager_model(manager):
    c = manager.current.components
    comps = {"unet": c.unet, "text_encoder": c.text_encoder}
    mods = named_modules(comps)
    sd, exp = make_lora(mods)
    parsed = parse_lora(sd, comps)
    snap = snapshot(mods)
    patcher = LoraPatcher()
    patcher.apply(mods, [(parsed, 1.0, 1.0)])
    for t, d in exp.items():
        torch.testing.assert_close(mods[t].weight.float(), (snap[t][0].float() + d).to(snap[t][0].dtype).float(),
                                   rtol=1e-3, atol=1e-3)
    patcher.restore()
    assert_identical(mods, snap)
