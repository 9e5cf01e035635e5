"""Prompt styles (A1111's styles.csv): applied when the job starts, found again in a pasted infotext."""
import numpy as np
import pytest

from conftest import small
from webui.engine.errors import UserError
from webui.engine.prompts.styles import Style, StyleDatabase, merge

CSV = ('\ufeffname,prompt,negative_prompt\n'
       'Cinematic,"cinematic still, {prompt}, film grain","cartoon, drawing"\n'
       'Sharp,"sharp focus, 8k",blurry\n'
       'Empty,,\n')


@pytest.fixture
def styles(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(CSV, encoding="utf-8")
    return StyleDatabase(path)


def test_merge_is_a1111s():
    assert merge("cinematic still, {prompt}, film grain", "a cat") == "cinematic still, a cat, film grain"
    assert merge("sharp focus", "a cat") == "a cat, sharp focus"
    assert merge("sharp focus", "") == "sharp focus" and merge("", "a cat") == "a cat"


def test_apply_then_extract_gives_back_the_prompts_and_styles(styles):
    assert styles.names() == ["Cinematic", "Sharp", "Empty"]  # the BOM A1111 writes on Windows is read
    prompt, negative, missing = styles.apply("a cat", "ugly", ["Cinematic", "Sharp", "Nope"])
    assert prompt == "cinematic still, a cat, film grain, sharp focus, 8k"
    assert negative == "ugly, cartoon, drawing, blurry" and missing == ["Nope"]
    assert styles.extract(prompt, negative) == (["Cinematic", "Sharp"], "a cat", "ugly")
    assert styles.extract("a dog", "") == ([], "a dog", "")


def test_save_and_delete_rewrite_the_csv(styles, tmp_path):
    styles.save(Style("Mine", "oil painting", "photo"))
    assert StyleDatabase(tmp_path / "styles.csv").get("Mine") == Style("Mine", "oil painting", "photo")
    styles.delete("Mine")
    assert "Mine" not in StyleDatabase(tmp_path / "styles.csv").names()
    assert not list(tmp_path.glob(".styles-*"))
    with pytest.raises(UserError, match="no style named 'Mine'"):
        styles.delete("Mine")
    with pytest.raises(UserError, match="a style needs a name"):
        styles.save(Style("  "))


def test_a_job_applies_styles_and_writes_the_styled_prompt(manager, data_dir):
    (data_dir / "styles.csv").write_text(CSV, encoding="utf-8")
    styled = manager.txt2img(small(styles=["Cinematic", "Missing"]), None)
    text = styled.infotexts[0]
    assert text.startswith("cinematic still, a cat, film grain\nNegative prompt: ugly, cartoon, drawing\n")
    assert styled.warnings == ["style 'Missing' is not in styles.csv: skipped"]
    written = manager.txt2img(small(prompt="cinematic still, a cat, film grain",
                                    negative_prompt="ugly, cartoon, drawing"), None)
    assert np.array_equal(np.asarray(styled.images[0]), np.asarray(written.images[0]))


def test_api_styles_and_ui_paste_finds_them(manager, data_dir, served):
    from gradio_client import Client

    (data_dir / "styles.csv").write_text(CSV, encoding="utf-8")
    text = manager.txt2img(small(styles=["Sharp"]), None).infotexts[0]
    values = Client(served, verbose=False).predict(text, api_name="/paste_prompt")
    assert values[1] == "a cat" and values[2] == "ugly"
    assert values[-1]["value"] == ["Sharp"]
