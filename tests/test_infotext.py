"""The A1111 1.10 infotext writer and reader (webui/engine/infotext.py)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from webui.engine.infotext import VERSION, format_infotext, parse_infotext, read_png_infotext
from webui.engine.params import GenerationParams


def cat(**changes) -> GenerationParams:
    fields = dict(prompt="a cat", negative_prompt="ugly", seed=1234, model_hash="0123456789", model="tiny",
                  sampler_name="Euler a")
    return GenerationParams(**{**fields, **changes})


CAT_FIELDS = ("Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, "
              "Size: 512x512, Model hash: 0123456789, Model: tiny")

# --- writer -------------------------------------------------------------------------------------


def test_version_constant():
    assert VERSION == "gouache-0.1.0"


def test_format_exact():
    assert format_infotext(cat()) == (
        "a cat\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, "
        "Seed: 1234, Size: 512x512, Model hash: 0123456789, Model: tiny, Version: gouache-0.1.0")


def test_format_no_negative_and_no_model():
    p = GenerationParams(prompt="a dog", steps=30, sampler_name="DPM++ 2M", scheduler="Karras",
                         cfg_scale=7.5, seed=42, width=768, height=512)
    assert format_infotext(p) == (
        "a dog\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, "
        "Size: 768x512, Version: gouache-0.1.0")


@pytest.mark.parametrize("cfg, text", [(7.0, "7"), (7.5, "7.5"), (12.25, "12.25"), (1.0, "1"), (7, "7")])
def test_cfg_scale_number_form(cfg, text):
    assert f", CFG scale: {text}, " in format_infotext(cat(cfg_scale=cfg))


def test_empty_prompt_is_stripped():
    assert format_infotext(cat(prompt="", negative_prompt="")) == f"{CAT_FIELDS}, Version: gouache-0.1.0"
    assert format_infotext(cat(prompt="")) == f"Negative prompt: ugly\n{CAT_FIELDS}, Version: gouache-0.1.0"


def test_quoting():
    p = cat(sampler_name="odd, name", extra={
        "ADetailer prompt": "a, b", "Lora hashes": "a: 0123456789ab, b: ba9876543210",
        "Note": "line1\nline2", "Plain": 'say "hi" (x)', "Quoted": '"q"', "Spaced": " lead",
        "Unicode": "猫, é"})
    assert format_infotext(p) == (
        'a cat\nNegative prompt: ugly\nSteps: 20, Sampler: "odd, name", Schedule type: Automatic, CFG scale: 7, '
        "Seed: 1234, Size: 512x512, Model hash: 0123456789, Model: tiny, "
        'ADetailer prompt: "a, b", Lora hashes: "a: 0123456789ab, b: ba9876543210", Note: "line1\\nline2", '
        'Plain: say "hi" (x), Quoted: "\\"q\\"", Spaced: " lead", Unicode: "猫, é", Version: gouache-0.1.0')
    back = parse_infotext(format_infotext(p))
    assert back.sampler_name == "odd, name"
    assert back.extra == {**p.extra, "Version": VERSION}


def test_fixed_keys_from_extra_keep_their_position():
    p = cat(extra={"Hires upscale": "2", "Clip skip": "2", "Denoising strength": "0.7", "VAE hash": "abcdef0123"})
    assert format_infotext(p) == (
        f"a cat\nNegative prompt: ugly\n{CAT_FIELDS}, VAE hash: abcdef0123, Denoising strength: 0.7, "
        "Clip skip: 2, Hires upscale: 2, Version: gouache-0.1.0")


def test_clip_skip_lands_after_model_before_version():
    text = format_infotext(cat(extra={"Clip skip": "2"}))
    assert text.endswith("Model: tiny, Clip skip: 2, Version: gouache-0.1.0")


def test_version_and_user_from_extra_come_last():
    p = cat(extra={"User": "bob", "Version": "v1.10.1", "Hires upscale": "2"})
    assert format_infotext(p).endswith("Model: tiny, Hires upscale: 2, Version: v1.10.1, User: bob")


def test_bare_key_when_key_equals_value():
    p = cat(extra={"Hires upscale": "2", "NGMS": "NGMS", "Token merging": "1"})
    text = format_infotext(p)
    assert text.endswith("Model: tiny, Hires upscale: 2, NGMS, Token merging: 1, Version: gouache-0.1.0")
    assert parse_infotext(text).extra == {"Hires upscale": "2", "NGMS": "NGMS", "Token merging": "1",
                                          "Version": VERSION}
    assert format_infotext(parse_infotext(text)) == text


# --- reader -------------------------------------------------------------------------------------

A1111_EXAMPLE = (
    "masterpiece, (cat:1.2) <lora:add_detail:0.8>\n"
    "Negative prompt: lowres, bad hands\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Hires upscale: 2, "
    'Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1')

A1111_TEXTS = [
    A1111_EXAMPLE,
    # Two Lora hashes in one quoted value.
    "a <lora:a:1> <lora:b:0.5>\nNegative prompt: bad\nSteps: 25, Sampler: Euler a, Schedule type: Automatic, "
    "CFG scale: 6.5, Seed: 3, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, "
    'Lora hashes: "a: 0123456789ab, b: ba9876543210", Version: v1.10.1',
    # Multi-line prompt.
    "a cat\non a mat,\n  in the sun\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Schedule type: Automatic, "
    "CFG scale: 7, Seed: 1, Size: 512x512, Version: v1.10.1",
    # Multi-line negative prompt.
    "a cat\nNegative prompt: blurry,\nlowres\n\nbad hands\nSteps: 20, Sampler: Euler, Schedule type: Automatic, "
    "CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Version: v1.10.1",
    # No negative prompt.
    "a cat\nSteps: 30, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 4.5, Seed: 99, Size: 1024x1024, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Clip skip: 2, RNG: CPU, Version: v1.10.1",
    # Prompt with ':' and ','; hires, inpaint and user fields.
    "photo: a cat, (dog:1.3), [red:blue:0.5], time: 12:00\nNegative prompt: ugly, text: watermark\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse.safetensors, "
    "Denoising strength: 0.75, Mask blur: 4, Inpaint area: Only masked, Masked area padding: 32, "
    'Hires prompt: "a cat, detailed", Hires upscale: 2, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+, '
    "Version: v1.10.1, User: bob",
]


def test_parse_a1111_example():
    p = parse_infotext(A1111_EXAMPLE)
    assert p.prompt == "masterpiece, (cat:1.2) <lora:add_detail:0.8>"
    assert p.negative_prompt == "lowres, bad hands"
    assert (p.steps, p.sampler_name, p.scheduler, p.cfg_scale, p.seed, p.width, p.height) == (
        20, "DPM++ 2M", "Karras", 7.0, 1234, 512, 768)
    assert (p.model_hash, p.model) == ("6ce0161689", "v1-5-pruned-emaonly")
    assert p.denoising_strength == 0.7
    assert (p.enable_hr, p.hr_scale, p.hr_upscaler) == (True, 2.0, "Latent")  # A1111's paste turns hires on
    assert list(p.extra.items()) == [("Lora hashes", "add_detail: 7c6bad76eb54"), ("Version", "v1.10.1")]


@pytest.mark.parametrize("text", A1111_TEXTS)
def test_a1111_text_round_trip(text):
    assert format_infotext(parse_infotext(text)) == text


def test_parse_multiline_prompts():
    p = parse_infotext(A1111_TEXTS[2])
    assert p.prompt == "a cat\non a mat,\n  in the sun" and p.negative_prompt == "blurry"
    p = parse_infotext(A1111_TEXTS[3])
    assert p.prompt == "a cat" and p.negative_prompt == "blurry,\nlowres\n\nbad hands"
    p = parse_infotext(A1111_TEXTS[4])
    assert p.negative_prompt == "" and p.extra == {"Version": "v1.10.1"} and (p.rng, p.clip_skip) == ("CPU", 2)


def test_format_round_trip_exact():
    for p in (cat(), cat(negative_prompt="", model=None, model_hash=None), cat(extra={"Clip skip": "2"})):
        text = format_infotext(p)
        assert format_infotext(parse_infotext(text)) == text


def test_missing_schedule_type_defaults_to_automatic():
    p = parse_infotext("a\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    assert p.scheduler == "Automatic" and p.extra == {}


def test_api_style_float_is_read():
    # A1111's API writes `CFG scale: 7.0`; it reads as 7.0 (and is written back as the UI's `7`).
    p = parse_infotext("a\nSteps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 1, Size: 64x64")
    assert p.cfg_scale == 7.0 and ", CFG scale: 7, " in format_infotext(p)


def test_unconvertible_fields_stay_in_extra():
    text = "a\nSteps: abc, Sampler: Euler, CFG scale: high, Seed: 1.5, Size: big, Model: m"
    p = parse_infotext(text)
    defaults = GenerationParams()
    assert (p.steps, p.cfg_scale, p.seed, p.width, p.height) == (
        defaults.steps, defaults.cfg_scale, defaults.seed, defaults.width, defaults.height)
    assert p.sampler_name == "Euler" and p.model == "m"
    assert p.extra == {"Steps": "abc", "CFG scale": "high", "Seed": "1.5", "Size": "big"}
    # They are written back verbatim at their fixed positions, not as the defaults.
    assert format_infotext(p) == (
        "a\nSteps: abc, Sampler: Euler, Schedule type: Automatic, CFG scale: high, Seed: 1.5, Size: big, "
        "Model: m, Version: gouache-0.1.0")


def test_two_field_last_line_stays_in_prompt():
    text = "a cat\nSteps: 20, Seed: 5"
    p = parse_infotext(text)
    assert p.prompt == text and p.extra == {} and p.seed == GenerationParams().seed


def test_params_line_alone():
    p = parse_infotext("Steps: 10, Sampler: Euler, Seed: 7")
    assert (p.prompt, p.negative_prompt, p.steps, p.seed) == ("", "", 10, 7)


@pytest.mark.parametrize("text", [
    "", "\n", "\n\n\n", "   ", "Steps: x", '"', '""', "\x00\x01", ":::,,,", ", , ,", "a: b, c: d",
    "Negative prompt:", "Negative prompt: x", "Negative prompt:\n\n",
    'Steps: "unbalanced, Seed: 1, Size: 5x5', 'a\nLora hashes: "a\\", Steps: 1, Seed: 2',
    'k: "\\ud800", j: "\\x", i: "\\u12"', "Steps: 9" * 50, "a" * 5000 + ": b: c: d",
    "x\r\nNegative prompt: y\r\nSteps: 20, Seed: 1, Size: 512x512", "Size: 99999999999999999999x1, Seed: -, Steps: ",
    "Steps: " + "9" * 5000 + ", Seed: 1, Size: 1x1",
])
def test_parser_never_raises(text):
    p = parse_infotext(text)
    assert isinstance(p, GenerationParams) and isinstance(p.prompt, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in p.extra.items())
    format_infotext(p)


def test_garbage_is_the_prompt():
    assert parse_infotext("just a prompt, with: a colon").prompt == "just a prompt, with: a colon"
    assert parse_infotext("Steps: x").prompt == "Steps: x"
    assert parse_infotext(None).prompt == ""


def test_unbalanced_quote_keeps_raw_value():
    p = parse_infotext('a\nSteps: 1, Seed: 2, Note: "abc')
    assert p.extra["Note"] == '"abc'


# --- PNG ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [A1111_EXAMPLE, "猫\nSteps: 1, Seed: 2, Size: 64x64"])  # tEXt, then iTXt
def test_read_png_infotext(tmp_path, text):
    path = tmp_path / "a.png"
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert read_png_infotext(path) == text
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    assert read_png_infotext(tmp_path / "b.png") is None


# --- property -----------------------------------------------------------------------------------

FRAGMENTS = ["a", "cat", "Z9", " ", "  ", "\n", "\t", "\r", ":", ",", ", ", '"', "'", "\\", "\\n", "(x:1.2)",
             "<lora:a:0.5>", "Steps: 20", "Negative prompt:", "猫", "é", "-", "/", "Seed"]
texts = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


def _neg_line(line: str) -> bool:
    return line.strip().startswith("Negative prompt:")


# A1111-format limits, not bugs: the whole text is strip()ped, a prompt line starting with
# "Negative prompt:" starts the negative prompt, and that line's value is strip()ped.
prompts = texts.filter(lambda s: not s[:1].isspace() and not any(map(_neg_line, s.split("\n"))))
negatives = texts.filter(lambda s: s.split("\n")[0] == s.split("\n")[0].strip() and not s.isspace())
values = texts
# The last field's trailing whitespace is lost to strip(); Version/User are always last.
tail_values = texts.filter(lambda s: s == s.rstrip())
extras = st.dictionaries(
    st.sampled_from(["Hires upscale", "Denoising strength", "Lora hashes", "Foo"]),
    values, max_size=5)


@st.composite
def generation_params(draw):
    extra = draw(extras)
    for key in ("Version", "User"):
        if draw(st.booleans()):
            extra[key] = draw(tail_values)
    sizes = st.integers(min_value=8, max_value=256).map(lambda n: n * 8)
    return GenerationParams(
        prompt=draw(prompts), negative_prompt=draw(negatives), steps=draw(st.integers(1, 150)),
        sampler_name=draw(st.sampled_from(["Euler a", "DPM++ 2M", "Sampler"]) | values),
        scheduler=draw(st.sampled_from(["Automatic", "Karras"]) | values),
        cfg_scale=draw(st.sampled_from([1.0, 7.0, 7.5, 12.25]) | st.floats(0.0, 30.0)),
        seed=draw(st.integers(min_value=-1, max_value=2**32 - 1)), width=draw(sizes), height=draw(sizes),
        model=draw(st.none() | values), model_hash=draw(st.none() | values), extra=extra)


@settings(max_examples=300, deadline=None)
@given(generation_params())
def test_property_format_parse_format(p):
    text = format_infotext(p)
    back = parse_infotext(text)
    assert format_infotext(back) == text
    for name in ("prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "seed",
                 "width", "height", "model", "model_hash"):
        assert getattr(back, name) == getattr(p, name), name
    assert back.extra == {**p.extra, "Version": p.extra.get("Version", VERSION)}


@settings(max_examples=200, deadline=None)
@given(st.integers(), st.integers(), st.floats(allow_nan=True), st.integers(min_value=-(2**70), max_value=2**70))
def test_property_out_of_range_numbers_stay_text_and_nothing_is_lost(steps, seed, cfg, ensd):
    """Values a job could not take (a 20-digit seed, NaN, steps 0) are kept as text, never as typed fields:
    what is parsed validates, and every pair comes back when the infotext is written again."""
    text = f"a cat\nSteps: {steps}, CFG scale: {cfg}, Seed: {seed}, Size: 64x64, ENSD: {ensd}"
    back = parse_infotext(text)
    back.validate()
    again = format_infotext(back)
    for pair in (f"Steps: {steps}", f"Seed: {seed}", f"ENSD: {ensd}"):
        assert pair in again or (pair == f"ENSD: {ensd}" and ensd == 0) or pair == f"Seed: {seed}" and seed == -1
