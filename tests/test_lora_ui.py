"""The LoRA browser under the txt2img prompt: cards, search, refresh, click-to-insert, metadata on demand.

Driven over HTTP like tests/test_ui.py: gradio_client for the named endpoints, and for the card click the same
/gradio_api/run/predict request the page sends (the card's custom event with its data)."""
import builtins
import io
import json
import os
import re
import time

import httpx
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from webui.ui.lora_browser import JS, render_cards, tag_name, toggle_lora_tag, top_tags

# ---------------------------------------------------------------- toggle_lora_tag (pure)


@pytest.mark.parametrize("prompt, name, multiplier, expected", [
    ("", "ink", 1.0, "<lora:ink:1>"),                                   # empty prompt: no separator
    (None, "ink", 1.0, "<lora:ink:1>"),
    ("a cat", "ink", 1.0, "a cat <lora:ink:1>"),                        # appended after A1111's " "
    ("a cat", "ink", 0.5, "a cat <lora:ink:0.5>"),
    ("a cat <lora:ink:1>", "ink", 1.0, "a cat"),                        # present: a second click removes it
    ("a cat <lora:ink:0.6>, red", "ink", 1.0, "a cat, red"),            # whatever its multiplier
    ("<lora:ink:1> a cat", "ink", 1.0, "a cat"),                        # no separator left at the start
    ("<lora:ink:1>", "ink", 1.0, ""),
    ("a <lora:ink:1> b <lora:ink:0.3:0.2>", "ink", 1.0, "a b"),         # every occurrence
    ("a <lora:inky:1>", "ink", 1.0, "a <lora:inky:1> <lora:ink:1>"),    # a longer name is another LoRA
    ("a <lora:ink:1>", "InkStyle", 1.0, "a <lora:ink:1> <lora:InkStyle:1>"),
    ("a <lora:InkStyle:1>", "InkStyle", 1.0, "a"),                      # alias tags toggle the same way
    ("x <lora:style/ink:1>", "style/ink", 1.0, "x"),                    # relative path; regex chars escaped
    ("x <lora:a+b:1>", "a+b", 1.0, "x"),
])
def test_toggle_lora_tag(prompt, name, multiplier, expected):
    assert toggle_lora_tag(prompt, name, multiplier) == expected


def test_toggle_twice_gives_back_the_prompt():
    for prompt in ("", "a cat", "masterpiece, (cat:1.2) <lora:other:0.8>"):
        assert toggle_lora_tag(toggle_lora_tag(prompt, "ink"), "ink") == prompt


# ---------------------------------------------------------------- files


def write_lora(path, metadata=None, preview=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4)}, str(path), metadata=metadata)
    if preview:
        Image.new("RGB", (16, 16), "red").save(path.with_suffix(".png"))
    return path


TAGS = {"10_ink": {"ink wash": 12, "1girl": 3, " monochrome ": 5},
        "5_extra": {"monochrome": 4, "1girl": 1}}


@pytest.fixture
def lora_dir(data_dir):
    folder = data_dir / "models" / "Lora"
    write_lora(folder / "inky.safetensors", preview=True, metadata={
        "ss_output_name": "InkStyle", "ss_network_dim": "16", "ss_network_alpha": "8",
        "ss_base_model_version": "sd_v1", "ss_sd_model_name": "v1-5-pruned.safetensors",
        "ss_num_train_images": "17", "ss_training_comment": "trained on ink", "ss_tag_frequency": json.dumps(TAGS),
        "ss_dataset_dirs": json.dumps({"10_ink": {"n_repeats": 10, "img_count": 12}})})
    write_lora(folder / "style" / "watercolor.safetensors")
    write_lora(folder / "chars" / "Hero.safetensors", preview=True, metadata={"ss_output_name": "hero_v2"})
    return folder


@pytest.fixture
def manager(data_dir):
    """No checkpoint needs loading to browse LoRAs (conftest's manager loads one)."""
    from webui.engine.manager import PipelineManager

    return PipelineManager(data_dir / "models" / "Stable-diffusion", data_dir, device="cpu")


@pytest.fixture
def app(lora_dir, launched):  # the LoRA files first, then the app
    return launched


@pytest.fixture
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def cards(html):
    """data-name → the card's HTML."""
    return {re.search(r'data-name="([^"]+)"', part).group(1): part
            for part in html.split('<div class="lora-card"')[1:]}


# ---------------------------------------------------------------- listing


def test_accordion_is_under_the_txt2img_and_img2img_prompts_and_closed(app):
    import gradio as gr

    demo, _ = app
    accordions = [b for b in demo.blocks.values() if isinstance(b, gr.Accordion) and b.label == "LoRA"]
    assert len(accordions) == 2 and all(a.open is False for a in accordions)
    html = [b for b in demo.blocks.values() if isinstance(b, gr.HTML) and b.js_on_load == JS]
    assert len(html) == 2 and all(h.value == "" for h in html)  # nothing scanned until the accordion is opened


def test_listing_shows_names_aliases_folders_and_lazy_thumbnails_only_with_a_preview(client, app):
    html = client.predict("", api_name="/lora_list")
    assert "3 LoRAs" in html
    found = cards(html)
    assert set(found) == {"InkStyle", "watercolor", "hero_v2"}  # the alias is the tag word when it is unique
    assert '<div class="lora-name">inky</div><div class="lora-alias">InkStyle</div>' in found["InkStyle"]
    assert '<div class="lora-folder">style/</div>' in found["watercolor"]
    assert "lora-alias" not in found["watercolor"]
    assert '<div class="lora-folder">chars/</div>' in found["hero_v2"]
    assert html.count("<img") == 2 and "<img" not in found["watercolor"]
    for name in ("InkStyle", "hero_v2"):
        assert '<img class="lora-thumb" loading="lazy"' in found[name]

    # the thumbnail URL is served by gradio (relative to the page), the LoRA weights next to it are not
    src = re.search(r'src="([^"]+)"', found["InkStyle"]).group(1)
    assert src.startswith("gradio_api/file=") and src.endswith("inky.png")
    base = app[1]
    response = httpx.get(base + src)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (16, 16)
    assert httpx.get(base + src.replace("inky.png", "inky.safetensors")).status_code == 403


def test_search_filters_by_name_alias_or_folder_case_insensitively(client):
    def shown(text):
        return set(cards(client.predict(text, api_name="/lora_list")))

    assert shown("INKSTYLE") == {"InkStyle"}           # alias
    assert shown("inky") == {"InkStyle"}               # file name
    assert shown("style/") == {"watercolor"}           # subfolder
    assert shown("her") == {"hero_v2"}
    assert shown("  ") == {"InkStyle", "watercolor", "hero_v2"}
    html = client.predict("nothing-like-this", api_name="/lora_list")
    assert cards(html) == {} and "0 of 3 LoRAs match" in html


def test_refresh_picks_up_a_new_file(client, lora_dir):
    assert "3 LoRAs" in client.predict("", api_name="/lora_list")
    write_lora(lora_dir / "new" / "zebra.safetensors", preview=True)
    assert "zebra" not in cards(client.predict("", api_name="/lora_list"))  # listing alone does not rescan
    html = client.predict("", api_name="/lora_refresh")
    assert "4 LoRAs" in html and "<img" in cards(html)["zebra"] and "new/" in cards(html)["zebra"]
    (lora_dir / "style" / "watercolor.safetensors").unlink()
    assert set(cards(client.predict("", api_name="/lora_refresh"))) == {"InkStyle", "hero_v2", "zebra"}


def test_empty_folder_says_where_to_put_files(tmp_path):
    html = render_cards([], "", tmp_path / "models" / "Lora")
    assert "No LoRA files in" in html and str(tmp_path / "models" / "Lora") in html


def test_tag_word_is_one_that_find_resolves_to_the_same_file(manager, lora_dir):
    # an alias two files share, an alias equal to another file's name, a file name two folders share
    write_lora(lora_dir / "a.safetensors", metadata={"ss_output_name": "shared"})
    write_lora(lora_dir / "b.safetensors", metadata={"ss_output_name": "shared"})
    write_lora(lora_dir / "c.safetensors", metadata={"ss_output_name": "watercolor"})
    write_lora(lora_dir / "other" / "watercolor.safetensors")
    library = manager.loras
    words = {info.relative: tag_name(library, info) for info in library.refresh()}
    assert words == {"a": "a", "b": "b", "c": "c", "inky": "InkStyle", "chars/Hero": "hero_v2",
                     "other/watercolor": "watercolor", "style/watercolor": "style/watercolor"}  # find: first by path
    for info in library.list():
        assert library.find(words[info.relative]).path == info.path


def test_listing_500_files_opens_no_file_and_decodes_no_image(manager, lora_dir, monkeypatch):
    for i in range(500):
        path = write_lora(lora_dir / f"set{i % 7}" / f"lora{i:03}.safetensors",
                          metadata={"ss_output_name": f"alias{i:03}"})
        if i % 2:
            path.with_suffix(".preview.png").write_bytes(b"not decoded, never read")
    library = manager.loras
    library.refresh()  # the scan reads each header once; showing the listing reads nothing more

    opened = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def spy(real):
        def wrapped(file, *args, **kwargs):
            opened.append(str(file))
            return real(file, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(io, "open", spy(real_io_open))
    monkeypatch.setattr(os, "open", spy(real_os_open))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("an image was decoded"))
    from webui.ui.lora_browser import listing

    start = time.perf_counter()
    html = listing(library, "")
    filtered = listing(library, "SET3/")
    elapsed = time.perf_counter() - start
    monkeypatch.undo()
    assert opened == []
    assert "503 LoRAs" in html and html.count('loading="lazy"') == 250 + 2
    assert "71 of 503 LoRAs match" in filtered
    assert elapsed < 2.0, elapsed  # ~10 ms here; the bound only catches a per-file disk or decode step


# ---------------------------------------------------------------- clicks and metadata


def fire(app, event, data, prompt=None):
    """POST what the page sends when a card's custom event fires: the event's data and the component's id."""
    demo, base = app
    config = demo.get_config_file()
    dep = next(d for d in config["dependencies"] if any(t[1] == event for t in d["targets"]))
    trigger = next(t[0] for t in dep["targets"] if t[1] == event)
    body = {"data": [] if prompt is None else [prompt], "event_data": data, "fn_index": dep["id"],
            "trigger_id": trigger, "session_hash": "lora-test"}
    assert dep["queue"] is False  # sent straight to run/predict, as the browser does for unqueued events
    response = httpx.post(base + "gradio_api/run/predict", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["data"]


def test_clicking_a_card_toggles_its_tag_in_the_prompt(app):
    assert "trigger('lora_insert'" in JS and "data-name" not in JS  # the card's data-name travels as {name}
    assert fire(app, "lora_insert", {"name": "InkStyle"}, "a cat") == ["a cat <lora:InkStyle:1>"]
    assert fire(app, "lora_insert", {"name": "InkStyle"}, "a cat <lora:InkStyle:1>") == ["a cat"]
    assert fire(app, "lora_insert", {"name": "watercolor"}, "") == ["<lora:watercolor:1>"]


def test_toggle_endpoint(client):
    assert client.predict("a cat", "InkStyle", 1.0, api_name="/lora_toggle") == "a cat <lora:InkStyle:1>"
    assert client.predict("a cat <lora:InkStyle:0.7>", "InkStyle", 1.0, api_name="/lora_toggle") == "a cat"
    assert client.predict("", "hero_v2", 0.8, api_name="/lora_toggle") == "<lora:hero_v2:0.8>"


def test_metadata_on_demand_with_top_tags(client):
    view = client.predict("InkStyle", api_name="/lora_metadata")
    assert (view["name"], view["alias"], view["file"], view["tag"]) == (
        "inky", "InkStyle", "inky.safetensors", "<lora:InkStyle:1>")
    meta = view["metadata"]
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_base_model_version"],
            meta["ss_num_train_images"], meta["ss_training_comment"]) == ("16", "8", "sd_v1", "17", "trained on ink")
    assert meta["ss_tag_frequency"] == TAGS                            # JSON strings shown parsed
    assert meta["ss_dataset_dirs"] == {"10_ink": {"n_repeats": 10, "img_count": 12}}
    # summed over the dataset folders, most frequent first
    assert view["top_tags"] == [["ink wash", 12], ["monochrome", 9], ["1girl", 4]]
    # by file name or relative path too; a file without metadata says so
    assert client.predict("inky", api_name="/lora_metadata")["alias"] == "InkStyle"
    plain = client.predict("style/watercolor", api_name="/lora_metadata")
    assert plain["note"] == "no training metadata in this file" and "metadata" not in plain


def test_metadata_of_an_unknown_name_is_an_error_message(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="LoRA not found"):
        client.predict("nope", api_name="/lora_metadata")


def test_info_button_on_a_card_shows_its_metadata(app):
    assert "trigger('lora_info'" in JS
    name_update, view = fire(app, "lora_info", {"name": "hero_v2"})
    assert name_update["value"] == "hero_v2" and ("chars/Hero (hero_v2)", "hero_v2") in map(
        tuple, name_update["choices"])
    assert (view["alias"], view["file"], view["tag"]) == ("hero_v2", "chars/Hero.safetensors", "<lora:hero_v2:1>")


def test_top_tags_counts_words_when_captions_are_sentences():
    sentences = {"1_x": {"a woman standing in the rain with an umbrella": 2, "a woman walking in the rain": 1}}
    tags = top_tags({"ss_tag_frequency": json.dumps(sentences)})
    assert tags[:3] == [("rain", 3), ("the", 3), ("woman", 3)]
    assert top_tags({}) == [] and top_tags({"ss_tag_frequency": "not json"}) == []
