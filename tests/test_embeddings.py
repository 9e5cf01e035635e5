import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from webui.engine.models.checkpoints import HashCache
from webui.engine.errors import UserError
from webui.engine.prompts.embeddings import (
    Embedding,
    EmbeddingDatabase,
    EmbeddingError,
    embedding_name,
    read_embedding_file,
)

WIDTH = 32  # the tiny CLIP's hidden size
TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "webui" / "engine" / "models" / "configs" / "sd1" / "tokenizer"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


class WritesAFile:
    """A pickle payload that creates a file when unpickled (what a malicious embedding does)."""
    target = None

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def vectors(n, width=WIDTH, seed=0):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def a1111_pt(path, vec, **meta):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, **meta}, path)
    return path


@pytest.fixture
def folder(tmp_path):
    """One embedding of every format, plus the ones that must be skipped or refused."""
    root = tmp_path / "embeddings"
    root.mkdir()
    a1111_pt(root / "a1111-style.pt", vectors(2, seed=1), name="a1111-style", step=500,
             sd_checkpoint="abcdef01", sd_checkpoint_name="tiny")
    save_file({"emb_params": vectors(3, seed=2)}, str(root / "kohya.safetensors"))
    (root / "my-style").mkdir()
    torch.save({"<my-style>": vectors(1, seed=3)[0]}, root / "my-style" / "learned_embeds.bin")
    (root / "sub" / "concept").mkdir(parents=True)
    save_file({"<concept>": vectors(1, seed=4)}, str(root / "sub" / "concept" / "learned_embeds.safetensors"))
    a1111_pt(root / "big768.pt", vectors(1, width=768))
    (root / "corrupt.pt").write_bytes(b"\x80\x02this is not a torch file" + os.urandom(64))
    (root / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    a1111_pt(root / "nan.pt", torch.tensor([[float("nan")] * WIDTH]))
    save_file({"a": vectors(1), "b": vectors(1)}, str(root / "twoterms.safetensors"))
    a1111_pt(root / ".hidden.pt", vectors(1))
    (root / "notes.txt").write_text("not an embedding")
    (root / "a1111-style.preview.png").write_bytes(b"\x89PNG")
    return root


# ---------------------------------------------------------------------------------------------- read_embedding_file


def test_reads_a1111_pt_string_to_param(tmp_path):
    vec = vectors(2)
    path = a1111_pt(tmp_path / "x.pt", vec, name="x", step=10)
    out = read_embedding_file(path)
    assert out.shape == (2, WIDTH) and out.dtype == torch.float32
    assert torch.equal(out, vec)


def test_reads_original_textual_inversion_parameterdict(tmp_path):
    """rinongal/textual_inversion saved string_to_param as an nn.ParameterDict."""
    vec = vectors(2)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vec.clone())})
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params}, tmp_path / "old.pt")
    assert torch.equal(read_embedding_file(tmp_path / "old.pt"), vec)


def test_reads_safetensors_emb_params_and_half_precision(tmp_path):
    vec = vectors(3).half()
    save_file({"emb_params": vec}, str(tmp_path / "k.safetensors"))
    out = read_embedding_file(tmp_path / "k.safetensors")
    assert out.dtype == torch.float32 and torch.equal(out, vec.float())


def test_reads_diffusers_concepts_and_a_1d_vector_becomes_one_row(tmp_path):
    vec = vectors(1)[0]
    torch.save({"<cat-toy>": vec}, tmp_path / "learned_embeds.bin")
    save_file({"<cat-toy>": vec}, str(tmp_path / "learned_embeds.safetensors"))
    for name in ("learned_embeds.bin", "learned_embeds.safetensors"):
        out = read_embedding_file(tmp_path / name)
        assert out.shape == (1, WIDTH) and torch.equal(out[0], vec)


def test_sdxl_clip_l_clip_g_picks_the_requested_width(tmp_path):
    clip_l, clip_g = vectors(2, 768), vectors(2, 1280, seed=1)
    save_file({"clip_l": clip_l, "clip_g": clip_g}, str(tmp_path / "xl.safetensors"))
    path = tmp_path / "xl.safetensors"
    assert torch.equal(read_embedding_file(path, 768), clip_l)
    assert torch.equal(read_embedding_file(path, 1280), clip_g)
    both = read_embedding_file(path)
    assert both.shape == (2, 2048) and torch.equal(both[:, :768], clip_l) and torch.equal(both[:, 768:], clip_g)


@pytest.mark.parametrize("data, found", [
    ({"a": torch.zeros(1, 4), "b": torch.zeros(1, 4)}, "'a': tensor (1, 4)"),
    ({"string_to_param": {"*": torch.zeros(1, 4), "+": torch.zeros(1, 4)}}, "holds 2 tensors"),
    ({"hello": "world"}, "'hello': str"),
    ({"x": torch.zeros(2, 3, 4)}, "shape (2, 3, 4)"),
])
def test_anything_else_is_an_error_naming_the_file_and_what_was_found(tmp_path, data, found):
    torch.save(data, tmp_path / "odd.pt")
    with pytest.raises(EmbeddingError, match="odd.pt") as info:
        read_embedding_file(tmp_path / "odd.pt")
    assert found in str(info.value)
    assert isinstance(info.value, UserError)


def test_a_list_is_not_an_embedding(tmp_path):
    torch.save([torch.zeros(4)], tmp_path / "list.pt")
    with pytest.raises(EmbeddingError, match="list.pt: it holds a list"):
        read_embedding_file(tmp_path / "list.pt")


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_pickle_with_code_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "pwned.txt"
    WritesAFile.target = marker
    payload = {"string_to_param": {"*": torch.zeros(1, WIDTH)}, "x": WritesAFile()}
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save(payload, f) if how == "torch.save" else pickle.dump(payload, f)
    with pytest.raises(EmbeddingError, match=r"refused to load embedding evil.pt: .*(open).*could run code"):
        read_embedding_file(tmp_path / "evil.pt")
    assert not marker.exists()


def test_corrupt_files_are_clear_errors(tmp_path):
    (tmp_path / "c.pt").write_bytes(os.urandom(100))
    (tmp_path / "c.safetensors").write_bytes(b"garbage")
    with pytest.raises(EmbeddingError, match="cannot read embedding c.pt"):
        read_embedding_file(tmp_path / "c.pt")
    with pytest.raises(EmbeddingError, match="cannot read embedding c.safetensors: not a valid .safetensors"):
        read_embedding_file(tmp_path / "c.safetensors")


# ---------------------------------------------------------------------------------------------- database


def test_names_are_stems_and_diffusers_files_take_their_folder_name(folder):
    assert embedding_name(folder / "a1111-style.pt", folder) == "a1111-style"
    assert embedding_name(folder / "my-style" / "learned_embeds.bin", folder) == "my-style"
    assert embedding_name(folder / "learned_embeds.bin", folder) == "learned_embeds"


def test_load_keeps_matching_width_and_lists_the_rest_as_skipped(folder, tokenizer):
    db = EmbeddingDatabase(folder)
    db.load(tokenizer, WIDTH)
    assert list(db.loaded) == ["a1111-style", "concept", "kohya", "my-style"]
    assert db.loaded["a1111-style"].vectors.shape == (2, WIDTH)
    assert db.loaded["kohya"].vectors.shape == (3, WIDTH)
    assert db.loaded["my-style"].vectors.shape == (1, WIDTH)
    assert db.loaded["a1111-style"].step == 500 and db.loaded["a1111-style"].checkpoint_name == "tiny"

    assert set(db.skipped) == {"big768", "corrupt", "broken", "nan", "twoterms"}
    assert isinstance(db.skipped["big768"], Embedding) and db.skipped["big768"].width == 768
    assert "cannot read embedding corrupt.pt" in db.skipped["corrupt"]
    assert "not a valid .safetensors" in db.skipped["broken"]
    assert "NaN" in db.skipped["nan"]
    assert "twoterms.safetensors" in db.skipped["twoterms"]
    assert "hidden" not in db.loaded and ".hidden" not in db.skipped


def test_a_malicious_pickle_in_the_folder_is_skipped_and_runs_nothing(folder, tokenizer, tmp_path):
    marker = tmp_path / "pwned.txt"
    WritesAFile.target = marker
    torch.save({"string_to_param": {"*": torch.zeros(1, WIDTH)}, "x": WritesAFile()}, folder / "evil.pt")
    db = EmbeddingDatabase(folder)
    db.load(tokenizer, WIDTH)
    assert "refused to load embedding evil.pt" in db.skipped["evil"]
    assert "evil" not in db.loaded
    assert not marker.exists()


def test_the_same_files_are_all_skipped_for_a_wider_text_encoder(folder, tokenizer):
    db = EmbeddingDatabase(folder)
    db.load(tokenizer, 768)
    assert list(db.loaded) == ["big768"]
    assert isinstance(db.skipped["a1111-style"], Embedding)


def test_sdxl_embedding_takes_the_combined_width_as_a1111(tmp_path, tokenizer):
    save_file({"clip_l": vectors(2, 768), "clip_g": vectors(2, 1280)}, str(tmp_path / "xl.safetensors"))
    db = EmbeddingDatabase(tmp_path)
    db.load(tokenizer, 768)  # an SD1 model: skipped, as A1111 skips SDXL embeddings there
    assert "xl" in db.skipped and "xl" not in db.loaded
    db.load(tokenizer, 2048)
    emb = db.loaded["xl"]
    assert emb.vectors.shape == (2, 2048) and emb.parts["clip_g"].shape == (2, 1280)


def test_missing_folder_loads_nothing(tmp_path, tokenizer):
    db = EmbeddingDatabase(tmp_path / "nope")
    db.load(tokenizer, WIDTH)
    assert db.loaded == {} and db.skipped == {}
    assert db.find_embedding_at_position([1, 2, 3], 0) == (None, None)


def test_finds_a_multi_token_name_at_its_offset(folder, tokenizer):
    db = EmbeddingDatabase(folder)
    db.load(tokenizer, WIDTH)
    name_ids = ids(tokenizer, "my-style")
    assert len(name_ids) > 1
    prompt = ids(tokenizer, "a photo of my-style, cat")
    offset = prompt.index(name_ids[0])
    assert prompt[offset:offset + len(name_ids)] == name_ids
    embedding, span = db.find_embedding_at_position(prompt, offset)
    assert embedding is db.loaded["my-style"] and span == len(name_ids)
    for other in range(len(prompt)):
        if other != offset:
            assert db.find_embedding_at_position(prompt, other) == (None, None)
    assert db.find_embedding_at_position(prompt, len(prompt)) == (None, None)
    # "my" alone is not the embedding: the whole name must match
    assert db.find_embedding_at_position(ids(tokenizer, "my cat"), 0) == (None, None)


def test_longest_name_wins(tmp_path, tokenizer):
    a1111_pt(tmp_path / "style.pt", vectors(1, seed=1))
    a1111_pt(tmp_path / "style-two.pt", vectors(2, seed=2))
    db = EmbeddingDatabase(tmp_path)
    db.load(tokenizer, WIDTH)
    assert ids(tokenizer, "style-two")[0] == ids(tokenizer, "style")[0]
    prompt = ids(tokenizer, "style-two and style")
    embedding, span = db.find_embedding_at_position(prompt, 0)
    assert embedding.name == "style-two" and span == len(ids(tokenizer, "style-two"))
    embedding, span = db.find_embedding_at_position(prompt, len(prompt) - 1)
    assert embedding.name == "style" and span == 1


def test_duplicate_names_and_token_twins_are_skipped_with_a_reason(tmp_path, tokenizer):
    a1111_pt(tmp_path / "twin.pt", vectors(1))
    (tmp_path / "sub").mkdir()
    a1111_pt(tmp_path / "sub" / "twin.pt", vectors(1))
    a1111_pt(tmp_path / "TWIN.pt", vectors(1))  # lowercased by the tokenizer: the same ids as "twin"
    db = EmbeddingDatabase(tmp_path)
    db.load(tokenizer, WIDTH)
    assert "twin" in db.loaded or "TWIN" in db.loaded
    reasons = " | ".join(v for v in db.skipped.values() if isinstance(v, str))
    assert "already loaded from" in reasons and "same tokens" in reasons


def test_hash_is_sha256_prefix_and_uses_the_cache(folder, tokenizer, tmp_path):
    cache = HashCache(tmp_path / "cache.json")
    db = EmbeddingDatabase(folder, cache)
    db.load(tokenizer, WIDTH)
    emb = db.loaded["a1111-style"]
    assert emb.sha256 is None  # lazy: hashing waits until infotext needs it
    expected = hashlib.sha256((folder / "a1111-style.pt").read_bytes()).hexdigest()
    assert emb.hash == expected[:12] and emb.sha256 == expected
    assert cache.cached(folder / "a1111-style.pt") == expected
    # without a cache the hash is computed directly
    plain = EmbeddingDatabase(folder)
    plain.load(tokenizer, WIDTH)
    assert plain.loaded["kohya"].hash == hashlib.sha256((folder / "kohya.safetensors").read_bytes()).hexdigest()[:12]


def test_hash_of_a_deleted_file_is_empty_not_a_crash(tmp_path, tokenizer):
    a1111_pt(tmp_path / "gone.pt", vectors(1))
    db = EmbeddingDatabase(tmp_path)
    db.load(tokenizer, WIDTH)
    (tmp_path / "gone.pt").unlink()
    assert db.loaded["gone"].hash == ""


def test_reload_if_changed(tmp_path, tokenizer):
    db = EmbeddingDatabase(tmp_path)
    assert db.reload_if_changed() is False  # never loaded: nothing to reload with
    a1111_pt(tmp_path / "one.pt", vectors(1))
    db.load(tokenizer, WIDTH)
    assert db.reload_if_changed() is False
    a1111_pt(tmp_path / "two.pt", vectors(1))
    assert db.reload_if_changed() is True
    assert set(db.loaded) == {"one", "two"}
    assert db.reload_if_changed() is False
    (tmp_path / "one.pt").unlink()
    assert db.reload_if_changed() is True and set(db.loaded) == {"two"}
    assert db.reload_if_changed(tokenizer, 768) is True and db.loaded == {}


def test_oversized_file_is_skipped_without_reading_it(tmp_path, tokenizer, monkeypatch):
    from webui.engine.prompts import embeddings

    a1111_pt(tmp_path / "huge.pt", vectors(1))
    monkeypatch.setattr(embeddings, "MAX_FILE_BYTES", 16)
    db = EmbeddingDatabase(tmp_path)
    db.load(tokenizer, WIDTH)
    assert "too large" in db.skipped["huge"]


def test_empty_file_is_skipped(tmp_path, tokenizer):
    (tmp_path / "empty.pt").write_bytes(b"")
    db = EmbeddingDatabase(tmp_path)
    db.load(tokenizer, WIDTH)
    assert "empty" in db.skipped["empty"]


def test_prompt_encoder_puts_the_vectors_where_the_name_was(folder, tokenizer):
    encoder = pytest.importorskip("webui.engine.prompts.encoder")
    db = EmbeddingDatabase(folder)
    db.load(tokenizer, WIDTH)
    chunks, count = encoder.PromptEncoder(tokenizer, None, db).tokenize_line("a photo of a1111-style, cat")
    assert chunks[0].fixes == [(3, db.loaded["a1111-style"])]
    assert count == 3 + 2 + 2  # "a photo of", two vectors, ", cat"
