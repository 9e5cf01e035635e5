"""Live preview: the running task holds the family's cheap latent → RGB picture every N steps; it never changes
the final picture; the txt2img tab shows this job's previews while it samples."""
import time

import numpy as np

from conftest import small


def spy_on_previews(manager) -> list:
    """(step, whether the task got a new preview, the preview's shape) after every sampler step of later jobs."""
    seen = []
    original = manager._control

    def spying(task, *args, **kwargs):
        control = original(task, *args, **kwargs)
        report = control.on_step

        def on_step(step, steps, latents):
            before = task.preview_id
            report(step, steps, latents)
            seen.append((step, task.preview_id != before, None if task.preview is None else tuple(task.preview.shape)))
        control.on_step = on_step
        return control
    manager._control = spying
    return seen


def test_previews_every_n_steps_and_the_picture_is_unchanged(manager):
    seen = spy_on_previews(manager)
    manager.update_settings(show_progress_every_n_steps=3)
    with_previews = manager.txt2img(small(steps=7), None)
    assert [(step, new) for step, new, _ in seen] == [(1, False), (2, False), (3, True), (4, False), (5, False),
                                                      (6, True), (7, True)]
    assert seen[-1][2] == (3, 8, 8)  # RGB at latent resolution
    seen.clear()
    manager.update_settings(live_previews_enable=False)
    without = manager.txt2img(small(steps=7), None)
    assert not any(new for _, new, _ in seen)
    assert np.array_equal(np.asarray(with_previews.images[0]), np.asarray(without.images[0]))


def test_the_txt2img_tab_streams_previews_of_its_own_job(served, monkeypatch, manager, slow_steps):
    from gradio_client import Client

    from webui.ui import live

    monkeypatch.setattr(live, "POLL_SECONDS", 0.05)
    slow_steps(0.1)
    manager.update_settings(show_progress_every_n_steps=2)
    client = Client(served, verbose=False)
    job = client.submit("tiny.safetensors", "a red ball", "", "Euler", "Automatic", 12, 64, 64, 1, 1, 7, 5,
                        api_name="/txt2img")
    while not job.done():
        time.sleep(0.05)
    outputs = job.outputs()
    previews, final = outputs[:-1], outputs[-1]
    assert len(previews) >= 2  # pictures arrived while it sampled
    for gallery, *_ in previews:
        assert len(gallery) == 1
    assert "Seed: 5" in final[1] and final[0][0]["image"].endswith(".png")


def test_the_img2img_tab_streams_previews_too(served, monkeypatch, manager, tmp_path, slow_steps):
    from gradio_client import Client, handle_file
    from PIL import Image

    from test_img2img_ui import BASE
    from webui.ui import live

    monkeypatch.setattr(live, "POLL_SECONDS", 0.05)
    slow_steps(0.1)
    manager.update_settings(show_progress_every_n_steps=2)
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    job = Client(served, verbose=False).submit(
        **{**BASE, "steps": 16, "denoising_strength": 1.0}, mode="img2img", init_image=handle_file(str(init)),
        api_name="/img2img")
    while not job.done():
        time.sleep(0.05)
    outputs = job.outputs()
    assert len(outputs) >= 3 and "Denoising strength: 1" in outputs[-1][1]


def original_taesd_decoder():
    """TAESD's decoder written as madebyollin/taesd's taesd.py builds it (MIT): an nn.Sequential whose index 0 is
    the tanh clamp, output in [0, 1]. The file layout and arithmetic a user's taesd_decoder.pth has."""
    import torch
    from torch import nn

    def conv(n_in, n_out, **kwargs):
        return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)

    class Clamp(nn.Module):
        def forward(self, x):
            return torch.tanh(x / 3) * 3

    class Block(nn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
            self.skip = nn.Identity()
            self.fuse = nn.ReLU()

        def forward(self, x):
            return self.fuse(self.conv(x) + self.skip(x))

    layers = [Clamp(), conv(4, 64), nn.ReLU()]
    for _ in range(3):
        layers += [Block(64, 64), Block(64, 64), Block(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False)]
    layers += [Block(64, 64), conv(64, 3)]
    return nn.Sequential(*layers)


def test_taesd_preview_matches_the_original_decoder_and_leaves_the_picture_alone(manager, data_dir):
    import torch

    from webui.engine.imaging import previews

    torch.manual_seed(0)
    original = original_taesd_decoder().eval()
    folder = data_dir / "models" / "VAE-approx"
    folder.mkdir(parents=True)
    torch.save(original.state_dict(), folder / "taesd_decoder.pth")
    latent = torch.randn(4, 8, 8)
    ours = previews.taesd_preview(previews.load(folder / "taesd_decoder.pth"), latent)
    with torch.no_grad():
        theirs = original(latent[None])[0] * 2 - 1
    assert ours.shape == (3, 64, 64)
    assert torch.allclose(ours, theirs.clamp(-1, 1), atol=1e-5)

    plain = manager.txt2img(small(steps=4), None)
    seen = spy_on_previews(manager)
    manager.update_settings(show_progress_type="TAESD", show_progress_every_n_steps=2)
    with_taesd = manager.txt2img(small(steps=4), None)
    assert seen[-1][2] == (3, 64, 64), "full-size previews from TAESD"
    assert np.array_equal(np.asarray(with_taesd.images[0]), np.asarray(plain.images[0]))
    manager.update_settings(show_progress_type="Full")
    seen.clear()
    manager.txt2img(small(steps=4), None)
    assert seen[-1][2] == (3, 64, 64)


def test_a_missing_or_broken_taesd_file_falls_back_to_cheap_previews(manager, data_dir, caplog):
    from webui.engine.imaging import previews
    from webui.engine.errors import UserError
    import pytest

    manager.update_settings(show_progress_type="TAESD", show_progress_every_n_steps=1)
    manager.txt2img(small(steps=2), None)
    assert "no taesd_decoder.pth" in caplog.text
    folder = data_dir / "models" / "VAE-approx"
    folder.mkdir(parents=True)
    (folder / "taesd_decoder.pth").write_bytes(b"not a model")
    with pytest.raises(UserError, match="taesd_decoder.pth is not a TAESD decoder"):
        previews.load(folder / "taesd_decoder.pth")
    assert manager.txt2img(small(steps=2), None).images
