"""The prompt language end to end on the tiny model: chunks, emphasis, clip skip, editing, AND, embeddings."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import small
from webui.engine.infotext import parse_infotext
from webui.engine.prompts.conditioning import build_conditioning
from webui.engine.prompts.encoder import PromptEncoder


@pytest.fixture
def encoder(manager) -> PromptEncoder:
    return manager.current.encoder


def pixels(image):
    return np.asarray(image).astype(np.int16)


def test_a_160_token_prompt_is_three_chunks_of_77(encoder):
    prompt = " ".join(["cat"] * 160)
    chunks, count = encoder.tokenize_line(prompt)
    assert count == 160 and [len(c.tokens) for c in chunks] == [77, 77, 77]
    assert encoder.encode(prompt).shape[1] == 3 * 77
    assert encoder.token_count(prompt) == (160, 225)
    assert encoder.token_count("a cat") == (2, 75)


def test_each_chunk_is_bos_tokens_eos_padded_with_eos(encoder):
    [chunk], _ = encoder.tokenize_line("a cat")
    assert chunk.tokens[:4] == [49406, 320, 2368, 49407] and set(chunk.tokens[3:]) == {49407}


def test_comma_backtrack_moves_the_last_phrase_to_the_next_chunk(encoder):
    prompt = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks, count = encoder.tokenize_line(prompt)
    first = chunks[0].tokens[1:-1]
    assert first[:71] == [2368] * 70 + [267] and set(first[71:]) == {49407}  # broke after the comma, padded
    assert chunks[1].tokens[1:11] == [1929] * 10
    assert count == 71 + 10  # tokens actually used, before padding (A1111)


def test_break_ends_a_chunk(encoder):
    chunks, _ = encoder.tokenize_line("a cat BREAK a dog")
    assert len(chunks) == 2 and chunks[1].tokens[1:3] == [320, 1929]


def test_emphasis(encoder):
    plain = encoder.encode("a cat")
    assert torch.equal(encoder.encode("a (cat:1.0)"), plain)
    strong = encoder.encode("a (cat:1.5)")
    assert not torch.equal(strong, plain)
    assert torch.allclose(strong.mean(), plain.mean(), atol=1e-6)  # "Original" restores the mean
    assert not torch.allclose(encoder.encode("a (cat:1.5)", emphasis="No norm").mean(), plain.mean())
    assert torch.equal(encoder.encode("a (cat:1.5)", emphasis="Ignore"), plain)
    [chunk], _ = encoder.tokenize_line("a (cat:1.5)", emphasis="None")
    assert 263 in chunk.tokens  # "(" kept as a literal token
    [chunk], _ = encoder.tokenize_line("a (cat) [dog]")
    assert chunk.multipliers[1:4] == pytest.approx([1.0, 1.1, 1 / 1.1])


def test_clip_skip_changes_the_conditioning(encoder):
    assert not torch.equal(encoder.encode("a cat", clip_skip=2), encoder.encode("a cat"))
    assert encoder.encode("a cat", clip_skip=12).shape == encoder.encode("a cat").shape  # deeper than the model


def test_prompt_editing_switches_at_the_requested_step(encoder):
    cond, _ = build_conditioning(encoder, "a [cat:dog:3]", "", steps=6)
    cat, dog = encoder.encode("a cat"), encoder.encode("a dog")
    # A1111 counts model calls from 0 and switches after the step number given
    for step in range(4):
        assert torch.equal(cond.at_step(step)[0][0], cat), step
    for step in range(4, 7):
        assert torch.equal(cond.at_step(step)[0][0], dog), step
    fraction, _ = build_conditioning(encoder, "a [cat:dog:0.5]", "", steps=10)
    assert torch.equal(fraction.at_step(5)[0][0], cat) and torch.equal(fraction.at_step(6)[0][0], dog)


def test_editing_and_alternation_change_the_picture(manager):
    kw = dict(sampler_name="Euler", steps=6)
    cat = pixels(manager.txt2img(small(prompt="a cat", **kw), None).images[0])
    dog = pixels(manager.txt2img(small(prompt="a dog", **kw), None).images[0])
    edited = pixels(manager.txt2img(small(prompt="a [cat:dog:3]", **kw), None).images[0])
    alternated = pixels(manager.txt2img(small(prompt="a [cat|dog]", **kw), None).images[0])
    for image in (edited, alternated):
        assert not np.array_equal(image, cat) and not np.array_equal(image, dog)


def test_and_parts_with_weights(manager, encoder):
    cond, _ = build_conditioning(encoder, "a cat AND a dog :1.5", "", steps=4)
    conds, weights, _ = cond.at_step(0)
    assert len(conds) == 2 and weights == [1.0, 1.5]
    kw = dict(sampler_name="Euler", steps=5)
    plain = pixels(manager.txt2img(small(prompt="a cat", **kw), None).images[0])
    zero = pixels(manager.txt2img(small(prompt="a cat AND a dog :0", **kw), None).images[0])
    both = pixels(manager.txt2img(small(prompt="a cat AND a dog", **kw), None).images[0])
    assert np.abs(zero - plain).max() <= 1  # a weight-0 part adds nothing (one more row in the UNet batch)
    assert not np.array_equal(both, plain)


def test_long_prompt_and_short_negative_share_one_batch(manager):
    processed = manager.txt2img(small(prompt=" ".join(["cat"] * 100), negative_prompt="ugly", steps=3), None)
    assert "Pad conds: True" in processed.infotexts[0]
    assert "Pad conds" not in manager.txt2img(small(steps=3), None).infotexts[0]


def test_extra_network_tags_are_stripped_before_encoding_but_kept_in_infotext(manager):
    tagged = manager.txt2img(small(prompt="a cat <hypernet:foo:0.8>", steps=3), None)
    plain = manager.txt2img(small(prompt="a cat", steps=3), None)
    assert np.array_equal(pixels(tagged.images[0]), pixels(plain.images[0]))
    assert tagged.infotexts[0].startswith("a cat <hypernet:foo:0.8>\n")
    assert [(t.kind, t.args) for t in tagged.extra_networks] == [("hypernet", ("foo", "0.8"))]


def test_clip_skip_and_emphasis_in_infotext(manager):
    text = manager.txt2img(small(prompt="a (cat)", clip_skip=2, emphasis="No norm", steps=3), None).infotexts[0]
    assert ", Model: tiny, Clip skip: 2, RNG: CPU, Emphasis: No norm, " in text
    params = parse_infotext(text)
    assert (params.clip_skip, params.emphasis) == (2, "No norm")
    assert "Clip skip" not in manager.txt2img(small(steps=3), None).infotexts[0]
    manager.settings.CLIP_stop_at_last_layers = 2
    assert "Clip skip: 2" in manager.txt2img(small(steps=3), None).infotexts[0]


def test_textual_inversion_by_name(manager, data_dir):
    width = manager.current.components.text_encoder.config.hidden_size
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(0))
    folder = data_dir / "embeddings"
    folder.mkdir(exist_ok=True)
    torch.save({"string_to_param": {"*": vectors}, "name": "shiny", "step": 10}, folder / "shiny.pt")
    torch.save({"string_to_param": {"*": torch.randn(1, width + 1)}}, folder / "other-model.pt")
    manager.current = None
    manager.load("tiny")
    assert "shiny" in manager.embeddings.loaded and "other-model" in manager.embeddings.skipped
    encoder = manager.current.encoder
    [chunk], count = encoder.tokenize_line("a shiny cat")
    assert count == 4 and chunk.tokens[1:5] == [320, 0, 0, 2368] and chunk.fixes[0][0] == 1
    with_embedding = encoder.encode("a shiny cat")
    plain = encoder.encode("a zzz zzz cat")
    # causal text encoder: BOS and "a" are untouched, the embedding's positions differ
    assert torch.equal(with_embedding[0, :2], plain[0, :2])
    assert not torch.allclose(with_embedding[0, 2:4], plain[0, 2:4])
    text = manager.txt2img(small(prompt="a shiny cat", steps=3), None).infotexts[0]
    import hashlib
    digest = hashlib.sha256((folder / "shiny.pt").read_bytes()).hexdigest()[:12]
    assert f'TI hashes: "shiny: {digest}"' in text


NASTY = ["", "(((", ")))", "[[[:::]]]", "[a:b:c:d]", "\\", "\x00\x01\x1b[31m", "猫 " * 300, "a:" * 500,
         "BREAK BREAK", "AND AND", "<lora:>", "[a|]", "(" * 3000 + "x", "[" * 3000, "a [b:c:-1] d",
         "[x:y:99999999999999999999]", "(x:nan)", "(x:1e309)", "\n\n\t"]


@pytest.mark.parametrize("prompt", NASTY)
def test_any_prompt_gives_an_image(manager, prompt):
    processed = manager.txt2img(small(prompt=prompt, negative_prompt=prompt[::-1], steps=2), None)
    assert len(processed.images) == 1 and pixels(processed.images[0]).std() > 1  # a picture, not NaN-black
    assert processed.infotexts[0].startswith(prompt.strip()[:20]) or prompt.strip() == ""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(list("()[]:|\\,<> ")), max_size=200))
def test_fuzz_encoder_never_raises(encoder, prompt):
    cond, _ = build_conditioning(encoder, prompt, prompt, steps=5)
    conds, _, uncond = cond.at_step(3)
    assert conds[0].shape[1] % 77 == 0 and conds[0].shape[1] == uncond.shape[1]
    assert torch.isfinite(conds[0]).all()
