"""Token ids of every chunk, for every family's encoders, against open_clip's own tokenizer (its bundled BPE
vocabulary and text cleaning — not the tokenizer files the engine bundles).

A chunk is what A1111 feeds an encoder: BOS, up to 75 text tokens, EOS, then padding to 77 — EOS for OpenAI's
CLIP (SD1, SDXL's first encoder), 0 for OpenCLIP (SD2, SDXL's bigG, the refiner), exactly what
open_clip.tokenize and the original `ldm`/`sgm` encoders produce for a text of that chunk's tokens. Prompts over 75
tokens are split every 75 tokens when there is no comma to break at (A1111's rule, which the original code does
not have: it truncates); BREAK ends a chunk."""
from __future__ import annotations

import pytest

from oracle.originals import load_ldm, open_clip_tokenizer

BOS, EOS = 49406, 49407
FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")


def words(n: int) -> str:
    """A comma-free text of exactly n tokens by open_clip's count."""
    vocabulary = "a portrait of an old sailor with grey beard under stormy sky oil painting".split()
    out: list[str] = []
    while len(open_clip_tokenizer().encode(" ".join(out))) < n:
        out.append(vocabulary[len(out) % len(vocabulary)])
    text = " ".join(out)
    assert len(open_clip_tokenizer().encode(text)) == n
    return text


PROMPTS = {"short": "a red cat, sitting on a sofa", "empty": "", "76 tokens": words(76), "200 tokens": words(200),
           "BREAK": "a red cat BREAK a blue dog"}


def expected_chunks(text: str, pad: int) -> list[list[int]]:
    parts = text.split(" BREAK ")
    chunks = []
    for part in parts:
        ids = open_clip_tokenizer().encode(part)
        pieces = [ids[i:i + 75] for i in range(0, len(ids), 75)] or [[]]
        chunks += [[BOS] + piece + [EOS] + [pad] * (75 - len(piece)) for piece in pieces]
    return chunks


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Each family's prompt encoder(s) as the manager wires them for a loaded checkpoint, with the pad id the
    original uses: {(family, 0 | 1): (PromptEncoder, pad id)}."""
    from webui.engine.manager import PipelineManager
    from webui.engine.models.tiny import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tokens")
    for family in FAMILIES:
        make_tiny_checkpoint(folder / f"{family}.safetensors", family=family)
    manager = PipelineManager(folder, folder, device="cpu")
    out = {}
    for family in FAMILIES:
        encoder = manager.load(family).encoder
        if family == "sdxl":  # CLIP-L, then OpenCLIP bigG
            out[(family, 0)], out[(family, 1)] = (encoder.first, EOS), (encoder.second, 0)
        else:
            out[(family, 0)] = (encoder, EOS if family == "sd1" else 0)
    return out


@pytest.mark.parametrize("name", PROMPTS)
@pytest.mark.parametrize("which", [("sd1", 0), ("sd2", 0), ("sdxl", 0), ("sdxl", 1), ("sdxl_refiner", 0)],
                         ids=["sd1", "sd2", "sdxl-clip-l", "sdxl-bigG", "refiner-bigG"])
def test_chunk_ids_equal_open_clip(encoders, which, name):
    encoder, pad = encoders[which]
    chunks, _ = encoder.tokenize_line(PROMPTS[name])
    assert [c.tokens for c in chunks] == expected_chunks(PROMPTS[name], pad)
    assert all(c.multipliers == [1.0] * 77 for c in chunks)  # no emphasis: every position weighs 1, padding too


@pytest.mark.parametrize("name", ["short", "empty"])
def test_a_one_chunk_prompt_is_exactly_open_clip_tokenize(encoders, name):
    """open_clip.tokenize itself (what the original SD2 / SDXL encoders call) for the OpenCLIP towers."""
    expected = load_ldm().open_clip.tokenize(PROMPTS[name])[0].tolist()
    for which in [("sd2", 0), ("sdxl", 1), ("sdxl_refiner", 0)]:
        chunks, _ = encoders[which][0].tokenize_line(PROMPTS[name])
        assert [c.tokens for c in chunks] == [expected]


def test_emphasis_weights_only_the_text_positions(encoders):
    encoder, pad = encoders[("sd2", 0)]
    chunks, _ = encoder.tokenize_line("a (red:1.5) cat")
    (chunk,) = chunks
    assert chunk.tokens == expected_chunks("a red cat", pad)[0]
    assert chunk.multipliers == [1.0, 1.0, 1.5] + [1.0] * 74
