"""The gradio app, driven over HTTP the way the browser (and gradio_client) drives it."""
from pathlib import Path

import pytest
from PIL import Image

from webui.engine.infotext import parse_infotext


def test_txt2img_over_gradio_client_returns_png_with_intact_metadata(served, data_dir):
    from gradio_client import Client

    client = Client(served, verbose=False)
    gallery, info = client.predict(
        "tiny.safetensors", "a red ball", "blurry", "Euler", "Automatic", 4, 64, 64, 1, 2, 7, 42,
        api_name="/txt2img")
    assert len(gallery) == 2
    for seed, item in zip((42, 43), gallery):
        image = Image.open(item["image"])
        assert image.format == "PNG" and image.size == (64, 64)
        params = parse_infotext(image.info["parameters"])
        assert (params.prompt, params.negative_prompt, params.sampler_name, params.seed, params.steps) == (
            "a red ball", "blurry", "Euler", seed, 4)
    assert info.startswith("a red ball\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, ")
    saved = sorted(Path(data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert [p.name for p in saved] == ["00000-42.png", "00001-43.png"]


def test_bad_size_is_an_error_message_not_a_crash(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(served, verbose=False)
    with pytest.raises(AppError, match="width must be a multiple of 8"):
        client.predict("tiny.safetensors", "x", "", "Euler", "Automatic", 2, 68, 64, 1, 1, 7, 1,
                       api_name="/txt2img")
    gallery, _ = client.predict("tiny.safetensors", "x", "", "Euler", "Automatic", 2, 64, 64, 1, 1, 7, 1,
                                   api_name="/txt2img")
    assert len(gallery) == 1


def test_app_starts_without_any_checkpoint_and_says_where_to_put_one(tmp_path):
    from webui.engine.manager import PipelineManager
    from webui.ui.app import NO_CHECKPOINT_HELP, build_app

    manager = PipelineManager(tmp_path / "models" / "Stable-diffusion", tmp_path, device="cpu")
    demo = build_app(manager, tmp_path / "outputs")
    notices = [b for b in demo.blocks.values() if getattr(b, "value", None) == NO_CHECKPOINT_HELP.format(
        dir=manager.ckpt_dir)]
    assert notices and notices[0].visible


def test_settings_tab_and_variation_seed_over_gradio_client(served, manager):
    from gradio_client import Client

    client = Client(served, verbose=False)
    from webui.engine.settings import Settings
    from webui.ui.settings import FIELDS

    wanted = dict(vars(Settings()), eta_ancestral=0.5, eta_noise_seed_delta=31337)
    client.predict(*[wanted[name] for name, _, _ in FIELDS], api_name="/apply_settings")
    assert (manager.settings.eta_ancestral, manager.settings.eta_noise_seed_delta) == (0.5, 31337)
    gallery, info = client.predict(
        checkpoint="tiny.safetensors", prompt="a red ball", negative_prompt="", sampler_name="Euler a",
        scheduler="Automatic", steps=3, width=64, height=64, n_iter=1, batch_size=1, cfg_scale=7, seed=5,
        subseed=8, subseed_strength=0.25, seed_resize_from_w=0, seed_resize_from_h=0, api_name="/txt2img")
    assert "Variation seed: 8, Variation seed strength: 0.25" in info
    assert "ENSD: 31337" in info and "Eta: 0.5" in info


def test_token_counter_grows_by_chunk(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    assert client.predict("a cat", 20, api_name="/token_count") == "2/75"
    assert client.predict(" ".join(["cat"] * 80), 20, api_name="/token_count") == "80/150"
    # the longest text a prompt edit produces counts; extra-network tags don't
    assert client.predict("[cat:" + " ".join(["dog"] * 76) + ":5] <lora:x:1>", 20,
                          api_name="/token_count") == "76/150"


def test_token_counter_works_before_any_model_is_loaded(tmp_path):
    from webui.engine.manager import PipelineManager

    manager = PipelineManager(tmp_path / "models" / "Stable-diffusion", tmp_path, device="cpu")
    assert manager.token_count("a photo of a cat", 20) == (5, 75)


def test_embeddings_are_listed_with_skipped_ones(served, manager, data_dir):
    import torch
    from gradio_client import Client

    folder = data_dir / "embeddings"
    folder.mkdir(exist_ok=True)
    width = manager.current.components.text_encoder.config.hidden_size
    torch.save({"string_to_param": {"*": torch.zeros(3, width)}}, folder / "glow.pt")
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}}, folder / "sd15-only.pt")
    listing = Client(served, verbose=False).predict(api_name="/refresh_embeddings")
    assert "**glow** (3 vectors)" in listing and "~~sd15-only~~ skipped" in listing
    assert manager.token_count("a glow cat", 20) == (5, 75)


def test_warnings_show_under_the_generation_info(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    _, info = client.predict("tiny.safetensors", "a cat <lora:not_here:1>", "", "Euler", "Automatic", 2, 64, 64,
                             1, 1, 7, 1, api_name="/txt2img")
    assert info.startswith("a cat <lora:not_here:1>\nSteps: 2")
    assert "\n\nWarning: LoRA not found: 'not_here'" in info and info.endswith("generated without it")
