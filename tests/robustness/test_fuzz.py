"""Fuzzing what a user or a file hands the engine (issue 13): the prompt language, infotext, the UI's token
counter and LoRA files' key names. 10,000 examples each, derandomized so that every run (and CI) tries the same
inputs; about 70 s of CPU for the four (measured on a 2-core machine).

"No exception" means none at all from the prompt language, infotext and the token counter, which are documented
never to raise on any string. Where input can be refused, the only exception allowed is the documented
user-facing one, a UserError with a message: LoraError for a `<lora:…>` tag without a name or with a weight that
is not a number, and for a LoRA file none of whose keys fit the model.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from webui.engine.errors import UserError
from webui.engine.fields import declared
from webui.engine.infotext import VERSION, format_infotext, parse_infotext
from webui.engine.lora import LoraError, LoraPatcher, build_key_map, named_modules, parse_lora
from webui.engine.lora.activation import lora_requests
from webui.engine.lora.formats import split_key
from webui.engine.params import GenerationParams
from webui.engine.prompts.encoder import CHUNK_LENGTH
from webui.engine.prompts.parser import (
    ExtraNetworkTag,
    extract_extra_networks,
    get_prompt_schedules,
    parse_prompt_attention,
    parse_scheduled,
    split_and,
)

FUZZ = settings(max_examples=10_000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tensors are tiny: on a busy 2-core machine a second intra-op thread's spin-waits made the LoRA
    target ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------- strategies

# Every code point, lone surrogates (a broken paste, a bad API client) included.
ANY_CHAR = st.characters(exclude_categories=())
NUMBERS = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", ".5", "5.", "1e5", "-1e-5", "+.", ".", "1.2.3", "1_0", "nan", "inf", "-inf", "１",
                     "٣", "9" * 400, "1e999"]),
)
SYNTAX = st.sampled_from([
    "(", ")", "[", "]", ":", "|", "\\", "\\(", "\\)", "\\[", "\\]", "\\\\", "\\\n", "<", ">", "=", ",", " ", "  ",
    "\n", "\t", "\r\n", "AND", " AND ", "BREAK", " BREAK ", "<lora:", "<lyco:", "<hypernet:", "te=", "unet=",
    "dyn=", "<lora:a:", "<lora::>", "<:>", "[a:b:", "[a|b]", "[:", "::", "(x:", ":1.3)", "cat", "a", "é", "猫",
    "\u200b", "\ufeff", "\x00", "\ud800", "\udfff", "Negative prompt:", "Steps:", "\"",
])
FRAGMENTS = st.one_of(SYNTAX, SYNTAX, NUMBERS, ANY_CHAR, st.text(ANY_CHAR, max_size=4))
SYNTAX_TEXT = st.lists(FRAGMENTS, max_size=40).map("".join)
SHORT_SYNTAX_TEXT = st.lists(FRAGMENTS, max_size=6).map("".join)
PROMPTS = st.one_of(SYNTAX_TEXT, st.text(ANY_CHAR, max_size=60), st.text(max_size=60))
STEPS = st.integers(1, 150)  # the steps slider's range (Gradio refuses others before the counter runs)


def _assert_pairs(pairs, kinds):
    assert isinstance(pairs, list) and pairs
    for pair in pairs:
        assert isinstance(pair, tuple) and len(pair) == 2
        assert isinstance(pair[0], kinds[0]) and isinstance(pair[1], kinds[1]), pair


# ------------------------------------------------------------------------------------------ (a) prompt language


@FUZZ
@given(PROMPTS, STEPS)
@example("(" * 20_000, 20)  # deep nesting: the parsers do not recurse
@example("[" * 20_000 + "a:b:0.5" + "]" * 20_000, 20)
@example("[a|" * 5_000 + "]" * 5_000, 150)
@example("<lora:" * 20_000 + " " * 20_000 + "AND BREAK", 1)  # long runs that a backtracking regex chokes on
def test_prompt_language_never_raises(text, steps):
    attention = parse_prompt_attention(text)
    _assert_pairs(attention, (str, float))

    schedule = parse_scheduled(text, steps)
    _assert_pairs(schedule, (int, str))
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends)) and ends[0] >= 1 and ends[-1] == steps
    assert get_prompt_schedules([text, ""], steps) == [schedule, [(steps, "")]]

    parts = split_and(text)
    _assert_pairs(parts, (str, float))

    stripped, tags = extract_extra_networks(text)
    assert isinstance(stripped, str) and len(stripped) <= len(text)
    assert all(isinstance(tag, ExtraNetworkTag) and tag.kind and tag.args for tag in tags)
    for tag in tags:
        tag.positional, tag.named  # noqa: B018  (both are read for every tag by the LoRA code)
    try:
        requests = lora_requests(tags)
    except UserError as e:  # a tag without a name or with a weight that is not a number
        assert isinstance(e, LoraError) and str(e)
    else:
        assert all(r.name and isinstance(r.te, float) and isinstance(r.unet, float) for r in requests)
        assert all(math.isfinite(r.te) and math.isfinite(r.unet) for r in requests)  # a NaN merge = black pictures


# ---------------------------------------------------------------------------------------------- (b) infotext

INFOTEXT_FRAGMENTS = st.one_of(
    SYNTAX, NUMBERS, ANY_CHAR,
    st.sampled_from(["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Clip skip", "ENSD",
                     "Schedule type", "RNG", "Version", "User", "Lora hashes", "Denoising strength", "Mask blur",
                     "Eta", "Variation seed", "Seed resize from", "Emphasis", "Hires upscale", "Tiling",
                     ": ", ", ", "\n", "\"", "\\\"", "\\u12", "x", "512x512", "64x64", "Negative prompt: ",
                     "Euler a", "Karras", "True", "False", "CPU", "NV"]),
)
INFOTEXTS = st.one_of(
    st.lists(INFOTEXT_FRAGMENTS, max_size=20).map("".join),
    st.text(ANY_CHAR, max_size=40),
    # a prompt, a negative prompt and a line of `Key: value` fields, each value possibly garbage
    st.builds(lambda prompt, neg, fields: f"{prompt}\nNegative prompt: {neg}\n" + ", ".join(fields),
              SHORT_SYNTAX_TEXT, SHORT_SYNTAX_TEXT,
              st.lists(st.builds("{}: {}".format, INFOTEXT_FRAGMENTS, st.one_of(NUMBERS, SHORT_SYNTAX_TEXT)),
                       min_size=3, max_size=6)),
)


@functools.cache
def _unwritten() -> dict:
    """{field: (values the writer leaves out, the value the reader gives a field that is not there)}."""
    blank = parse_infotext("")
    out = {d.name: (tuple(d.spec.infotext_omit), getattr(blank, d.name))
           for d in declared(GenerationParams) if d.spec.infotext is not None}
    out["clip_skip"] = ((1,), blank.clip_skip)  # 1 is the model's own last layer
    return out


def _typed(p: GenerationParams) -> dict:
    """The typed fields as the writer sees them: a value it leaves out equals absence, and fields written only
    together with another one (variation seed with its strength, seed resize from, masked area padding) count
    only when that one is written."""
    typed = dataclasses.asdict(p)
    del typed["extra"]
    for name, (omitted, absent) in _unwritten().items():
        if name in typed and (typed[name] in omitted or typed[name] == absent):
            typed[name] = "unwritten"
    if p.subseed_strength == 0:
        typed["subseed"] = "unwritten"
    if not (p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0):
        typed["seed_resize_from_w"] = typed["seed_resize_from_h"] = "unwritten"
    if not p.inpaint_full_res:
        typed["inpaint_full_res_padding"] = "unwritten"
    return typed


@FUZZ
@given(INFOTEXTS)
@example("a\nSteps: 1, Note :Note , Seed: 2")  # a key with a trailing space, equal to its value: found here
@example("a\nSteps: 1, Seed: 2, Version: 0 ")  # the last field's trailing space: lost to strip(), as in A1111
def test_infotext_never_raises_and_what_it_writes_reads_back_the_same(text):
    p = parse_infotext(text)
    assert isinstance(p, GenerationParams) and isinstance(p.prompt, str) and isinstance(p.negative_prompt, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in p.extra.items())
    p.validate()  # what is read is either a value a job takes or text in `extra`, never an invalid field

    # What the writer makes of it is a fixed point: read back and written again it is the same text, and read
    # again the same values. The first reading survives the trip: prompts, fields kept as text, and every typed
    # field (the writer leaves out some defaults: Clip skip 1 is read back as unset).
    written = format_infotext(p)
    again = parse_infotext(written)
    assert format_infotext(again) == written
    assert parse_infotext(written) == again
    assert (again.prompt, again.negative_prompt) == (p.prompt, p.negative_prompt)
    expected = {**p.extra, "Version": p.extra.get("Version", VERSION)}
    last = "User" if p.extra.get("User") is not None else "Version"  # written last: its trailing spaces go with
    expected[last] = expected[last].rstrip()  # the strip() of the whole text, as in A1111
    assert again.extra == expected
    assert _typed(again) == _typed(p)


# ----------------------------------------------------------------------------------------- (c) token counter

@pytest.fixture(scope="module")
def counters(tmp_path_factory):
    """The UI's counter twice: with no model loaded (the manager's bare tokenizer), and as for a loaded model
    with textual-inversion embeddings whose names (one or several tokens) the prompts contain."""
    from safetensors.torch import save_file

    from webui.engine.manager import PipelineManager
    from webui.engine.prompts.conditioning import prompt_token_count
    from webui.engine.prompts.embeddings import EmbeddingDatabase
    from webui.engine.prompts.encoder import PromptEncoder
    from webui.engine.prompts.text import clean_prompt

    folder = tmp_path_factory.mktemp("tokens")
    manager = PipelineManager(folder / "models" / "Stable-diffusion", folder, device="cpu")
    (folder / "embeddings").mkdir()
    for name, n in EMBEDDINGS.items():
        save_file({"emb_params": torch.zeros(n, 32)}, str(folder / "embeddings" / f"{name}.safetensors"))
    manager.token_count("", 1)  # loads the bare tokenizer
    tokenizer = manager._bare_encoder.tokenizer
    database = EmbeddingDatabase(folder / "embeddings")
    database.load(tokenizer, 32)
    assert sorted(database.loaded) == sorted(EMBEDDINGS)
    encoder = PromptEncoder(tokenizer, None, database)
    return {"bare": manager.token_count,
            "embeddings": lambda text, steps: prompt_token_count(encoder, clean_prompt(text)[0], max(1, steps))}


EMBEDDINGS = {"fuzzstyle": 2, "a-b-c": 3, "big": 75}
TOKEN_PROMPTS = st.one_of(
    st.lists(st.one_of(SYNTAX, NUMBERS, ANY_CHAR, st.sampled_from(list(EMBEDDINGS))), max_size=16).map("".join),
    st.text(ANY_CHAR, max_size=24),
)


@FUZZ
@given(TOKEN_PROMPTS, st.one_of(st.integers(1, 8), STEPS), st.sampled_from(["bare", "embeddings"]))
def test_token_counter_never_raises(counters, text, steps, counter):
    used, target = counters[counter](text, steps)
    assert isinstance(used, int) and isinstance(target, int)
    assert used >= 0 and target >= CHUNK_LENGTH and target % CHUNK_LENGTH == 0 and target >= used


# ------------------------------------------------------------------------------------------- (d) LoRA key map


@functools.cache
def _tiny():
    """(components, key map, modules) of the tiny SD1 model, built once: the UNet and the text encoder."""
    from webui.engine.models.tiny import tiny_modules

    m = tiny_modules(seed=0)
    components = {"unet": m.unet, "text_encoder": m.text_encoder}
    return components, build_key_map(components), named_modules(components)


PARTS = ["lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "scale", "dora_scale", "hada_w1_a",
         "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "lokr_w1", "lokr_w1_a", "lokr_w1_b",
         "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "diff", "diff_b", "w_norm", "b_norm", "on_input", "weight",
         "bias", "lora_A.weight", "lora_B.weight", "lora_A.default.weight", "lora.up.weight",
         "lora_linear_layer.down.weight", ""]
PREFIXES = ["lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te_text_model_", "lycoris_", "unet.",
            "text_encoder.", "text_encoder_2.", "text_encoder.text_model.", "lora_", "", "_", "."]
WORDS = ["down", "up", "mid", "blocks", "block", "input", "output", "middle", "0", "1", "2", "3", "9", "10",
         "attentions", "resnets", "transformer", "attn1", "attn2", "to", "q", "k", "v", "out", "proj", "in",
         "conv", "conv1", "conv2", "norm", "norm1", "ff", "net", "encoder", "layers", "self", "attn", "q_proj",
         "mlp", "fc1", "fc2", "text", "model", "emb", "time", "embedding", "linear", "shortcut", "op", "skip",
         "connection", "final", "layer", "label", "add", "lora", "unet", "te", "_", ".", ""]


@functools.cache
def _real_names():
    """Every module key the map knows (kohya, LDM, LyCORIS and PEFT spellings), as a strategy."""
    return st.sampled_from(sorted(_tiny()[1]))


KOHYA_LIKE = st.builds(lambda prefix, sep, words: prefix + sep.join(words), st.sampled_from(PREFIXES),
                       st.sampled_from("_."), st.lists(st.sampled_from(WORDS), max_size=10))
EDITS = st.tuples(st.integers(0, 200), st.sampled_from(["", "_", ".", "0", "x", "é"]))
PART_NAMES = st.sampled_from(PARTS) | st.text(ANY_CHAR, max_size=8)
JOINS = st.sampled_from([".", "", "_"])


@st.composite
def lora_module_keys(draw):
    """A module key: one the model has in any spelling the map knows, one with a character changed, added or
    removed, a kohya-like one made of a prefix and words of module paths, or any text."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(_real_names())
    if kind == 1:
        module = draw(_real_names())
        i, char = draw(EDITS)
        i %= len(module) + 1
        return module[:i] + char + module[i + 1:]
    if kind == 2:
        return draw(KOHYA_LIKE)
    return draw(st.text(ANY_CHAR, max_size=30))


SMALL_SHAPES = st.one_of(st.lists(st.sampled_from([0, 1, 2, 3, 4, 9, 32, 64, 128]), max_size=2),
                         st.lists(st.sampled_from([0, 1, 2, 3, 4, 9]), min_size=3, max_size=5))
DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool])
FLOAT_DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])
VALUES = st.sampled_from([0.0, 1.0, -0.5, 3.0])


def _tensor(shape, dtype, value):
    return torch.zeros(shape, dtype=dtype) if dtype is torch.bool else torch.full(shape, value, dtype=dtype)


@st.composite
def fitting_modules(draw):
    """A real module's kohya LoRA (up, down, maybe alpha) of shapes that fit it, sometimes one dimension off."""
    _, key_map, modules = _tiny()
    module_key = draw(_real_names())
    weight = list(modules[key_map[module_key]].weight.shape)
    rank = draw(st.sampled_from([1, 2, 4]))
    dtype, value = draw(FLOAT_DTYPES), draw(VALUES)
    if len(weight) < 2:  # a norm: LyCORIS w_norm / b_norm
        parts = {"w_norm": weight, "b_norm": weight}
    else:
        out_ch, in_ch, *kernel = weight
        parts = {"lora_up.weight": [out_ch, rank, 1, 1][:len(weight)], "lora_down.weight": [rank, in_ch, *kernel]}
    if draw(st.integers(0, 3)) == 0:
        part = draw(st.sampled_from(sorted(parts)))
        shape = parts[part]
        i = draw(st.integers(0, len(shape) - 1))
        parts[part] = shape[:i] + [draw(st.sampled_from([0, 1, 3, 128]))] + shape[i + 1:]
    tensors = {f"{module_key}.{part}": _tensor(shape, dtype, value) for part, shape in parts.items()}
    if draw(st.booleans()):
        tensors[f"{module_key}.alpha"] = torch.tensor(draw(VALUES))
    return tensors


@st.composite
def odd_keys(draw):
    """Any key: a module key, a separator and a part name (known or not), with a small tensor of any rank."""
    key = draw(lora_module_keys()) + draw(JOINS) + draw(PART_NAMES)
    return {key: _tensor(draw(SMALL_SHAPES), draw(DTYPES), draw(VALUES))}


LORA_STATE_DICTS = st.lists(st.one_of(fitting_modules(), odd_keys()), min_size=1, max_size=3).map(
    lambda dicts: {k: v for d in dicts for k, v in d.items()})


@FUZZ
@given(LORA_STATE_DICTS)
@example({"lora_te_encoder_layers_0_mlp_fc1.lora_up.weight": torch.tensor(0.0),  # found here: IndexError
          "lora_te_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(0, 32)})
@example({"lora_te_encoder_layers_0_layer_norm1.w_norm": torch.zeros(32),  # found here: ValueError
          "lora_te_encoder_layers_0_layer_norm1.scale": torch.zeros(0)})
def test_lora_of_any_keys_and_shapes_parses_or_is_a_lora_error(state_dict):
    components, key_map, modules = _tiny()
    for key in state_dict:
        module_key, part = split_key(key)
        assert isinstance(part, str) and key.startswith(module_key)
        assert key_map.get(module_key, next(iter(modules))) in modules  # every target the map names exists
    try:
        parsed = parse_lora(state_dict, components, "fuzz", key_map=key_map, modules=modules)
    except UserError as e:  # nothing fits
        assert isinstance(e, LoraError) and str(e)
        return
    assert parsed.deltas and all(target in modules for target in parsed.deltas)
    used = {f"{delta.key}.{part}" for delta in parsed.deltas.values() for part in delta.parts}
    # every key of the file is either merged or listed as unmatched (by its own name or its normalised one)
    for key in state_dict:
        module_key, part = split_key(key)
        assert key in parsed.unmatched or f"{module_key}.{part}" in used or f"{module_key}.{part}" in parsed.unmatched

    # what parsed merges, and comes off exactly
    before = {t: [p.detach().clone() for p in modules[t].parameters()] for t in parsed.deltas}
    patcher = LoraPatcher()
    try:
        patcher.apply(modules, [(parsed, 1.0, 1.0)])
    finally:
        patcher.restore()
    for target, params in before.items():
        assert all(torch.equal(a, b) for a, b in zip(modules[target].parameters(), params)), target
