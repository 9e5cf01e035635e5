"""The Settings tab's sections and search, the quicksettings bar, and the status line under the checkpoint."""
import json
import socket
from collections import Counter

import pytest
from conftest import small

from webui.engine.settings import QUICKSETTINGS_DEFAULT
from webui.ui import quicksettings
from webui.ui.settings import FIELDS, SECTIONS, layout, matching


def test_every_setting_is_in_exactly_one_section():
    from webui.engine.settings import Settings

    names = [name for name, _, _ in FIELDS]
    placed = Counter(name for _, members in SECTIONS for name in members)
    assert [name for name in names if placed[name] != 1] == []  # a new FIELDS entry needs its section
    assert set(placed) - set(names) == set()
    assert set(names) <= set(vars(Settings()))
    assert len({title for title, _ in SECTIONS}) == len(SECTIONS)


def test_search_matches_labels_ignoring_case():
    assert matching("CLIP") == {"CLIP_stop_at_last_layers"}
    assert {"s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max"} <= matching("Sigma ")
    assert matching("") == matching("   ") == {name for name, _, _ in FIELDS}
    assert matching("no such setting") == set()


def test_search_shows_only_the_sections_with_a_match():
    assert layout("eta", "System") == ({"Sampler parameters"}, matching("eta"))
    sections, shown = layout("image", "System")  # "File format for images", "... every generated image", …
    assert {"Saving images/grids", "Live previews"} <= sections and "System" not in sections
    assert layout("", "VAE") == ({"VAE"}, {name for name, _, _ in FIELDS})  # no search: the chosen section, whole
    assert layout("no such setting", "VAE") == (set(), set())


@pytest.fixture
def bare(tmp_path):
    """A manager with no checkpoint (nothing to load) that keeps its settings in config.json."""
    from webui.engine.manager import PipelineManager

    return PipelineManager(tmp_path / "models" / "Stable-diffusion", tmp_path, device="cpu",
                           settings_path=tmp_path / "config.json")


def elem_ids(demo) -> set[str]:
    return {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_the_bar_shows_the_listed_settings_and_the_tab_has_search(bare, tmp_path):
    from webui.engine.manager import PipelineManager
    from webui.ui.app import build_app

    assert quicksettings.names(bare) == ["sd_vae", "CLIP_stop_at_last_layers"]  # A1111's default, less the checkpoint
    # a copied A1111 config may name options this UI has no control for: skipped, kept in config.json
    bare.update_settings(quicksettings_list=["eta_ddim", "sd_model_checkpoint", "an_extension_option", "eta_ddim",
                                             "samples_format"])
    assert json.loads((tmp_path / "config.json").read_text())["quicksettings_list"][2] == "an_extension_option"
    restarted = PipelineManager(bare.ckpt_dir, tmp_path, device="cpu", settings_path=tmp_path / "config.json")
    demo = build_app(restarted, tmp_path / "outputs")
    ids = elem_ids(demo)
    assert {i for i in ids if i.startswith("quicksettings_")} == {"quicksettings_eta_ddim",
                                                                   "quicksettings_samples_format"}
    assert {"settings_search", "settings_sections", "model_status"} <= ids
    search = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "settings_search")
    assert search.get_config()["placeholder"] == "Search..."
    labels = [b.label for b in demo.blocks.values() if getattr(b, "label", None) == "Stable Diffusion checkpoint"]
    assert labels  # the checkpoint stays on the bar whatever the list says


@pytest.fixture
def client(bare, tmp_path):
    from gradio_client import Client

    from webui.ui.app import build_app

    bare.update_settings(quicksettings_list=[*QUICKSETTINGS_DEFAULT, "eta_noise_seed_delta"])  # a number box
    demo = build_app(bare, tmp_path / "outputs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


def test_a_quicksetting_applies_at_once_and_a_bad_value_stores_nothing(client, bare, tmp_path):
    from gradio_client.exceptions import AppError

    config = tmp_path / "config.json"
    assert client.predict(2, api_name="/quicksetting_CLIP_stop_at_last_layers") == 2  # the Settings tab's twin
    assert bare.settings.CLIP_stop_at_last_layers == 2
    assert json.loads(config.read_text())["CLIP_stop_at_last_layers"] == 2
    before = config.read_text()
    with pytest.raises(AppError, match="ENSD must be between 0 and .*, got -5"):
        client.predict(-5, api_name="/quicksetting_eta_noise_seed_delta")
    with pytest.raises(AppError):  # gradio's own bounds on a slider
        client.predict(99, api_name="/quicksetting_CLIP_stop_at_last_layers")
    assert bare.settings.CLIP_stop_at_last_layers == 2 and bare.settings.eta_noise_seed_delta == 0
    assert config.read_text() == before
    client.predict("None", api_name="/quicksetting_sd_vae")
    assert bare.settings.sd_vae == "None" and json.loads(config.read_text())["sd_vae"] == "None"


def test_a_cleared_number_is_refused_naming_the_setting(bare):
    from webui.engine.errors import UserError

    with pytest.raises(UserError, match="Eta noise seed delta"):
        quicksettings.apply(bare, "eta_noise_seed_delta", None)
    assert bare.settings.eta_noise_seed_delta == 0 and not bare.settings_path.exists()


def test_apply_settings_refuses_a_bad_value_and_stores_nothing(client, bare, tmp_path):
    config = tmp_path / "config.json"
    before, file_before = bare.settings, config.read_text()
    wanted = dict(vars(before), eta_ddim=0.5, eta_noise_seed_delta=-1)
    message = client.predict(*[wanted[name] for name, _, _ in FIELDS], api_name="/apply_settings")
    assert message.startswith("Not applied: ENSD must be") and "got -1" in message
    assert bare.settings == before and config.read_text() == file_before
    wanted.update(eta_noise_seed_delta=31337, quicksettings_list=["eta_ddim"])
    assert client.predict(*[wanted[name] for name, _, _ in FIELDS], api_name="/apply_settings") == "Settings applied."
    stored = json.loads(config.read_text())
    assert (stored["eta_ddim"], stored["eta_noise_seed_delta"]) == (0.5, 31337)
    assert stored["quicksettings_list"] == ["eta_ddim"]  # a JSON list, as A1111 writes it


def test_the_status_line_follows_the_model_a_job_loads(manager, tmp_path):
    from webui.ui.app import build_app, model_status

    demo = build_app(manager, tmp_path / "outputs")
    status = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model_status")
    # a timer re-reads it: a job started anywhere (another tab, the API) may load a model
    assert any(targets[1] == "tick" and status in fn.outputs for fn in demo.fns.values() for targets in fn.targets)
    manager.unload()
    assert model_status(manager) == "No model loaded yet."
    manager.txt2img(small(steps=1), None)
    assert model_status(manager).startswith("Active: **tiny")


def test_a_setting_not_placed_yet_still_shows_under_other(monkeypatch):
    import gradio as gr

    from webui.ui import settings

    monkeypatch.setattr(settings, "FIELDS", [*FIELDS, ("new_one", "A new one", lambda v: gr.Checkbox(v))])
    assert settings.sections()[-1] == ("Other", ["new_one"])
    assert settings.layout("a new", "System") == ({"Other"}, {"new_one"})
