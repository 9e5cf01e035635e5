"""The one job loop: settings are read once per job, txt2img and img2img count their steps the same way."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import small
from webui.engine.samplers.denoiser import DiscreteEpsDenoiser


def pictures(processed):
    return [np.asarray(image) for image in processed.images]


def test_settings_applied_during_a_job_do_not_reach_it(manager, monkeypatch):
    """Apply in Settings while a job runs (a slow model, two batches): that job's pictures and infotext stay
    those of the settings it started with; the next job gets the new ones."""
    params = small(steps=4, sampler_name="Euler a", n_iter=2, seed=5)
    before = manager.txt2img(params, None)
    change = dict(eta_ancestral=0.5, eta_noise_seed_delta=31337, CLIP_stop_at_last_layers=2, s_noise=0.9)

    started, applied = threading.Event(), threading.Event()
    call = DiscreteEpsDenoiser.__call__

    def slow(self, *args, **kwargs):
        started.set()
        assert applied.wait(30), "settings were not applied while the job ran"
        return call(self, *args, **kwargs)

    monkeypatch.setattr(DiscreteEpsDenoiser, "__call__", slow)
    result = {}
    job = threading.Thread(target=lambda: result.setdefault("p", manager.txt2img(params, None)))
    job.start()
    assert started.wait(30)
    manager.update_settings(**change)  # returns at once: it does not wait for the running job
    applied.set()
    job.join(60)
    during = result["p"]
    assert [a.tobytes() for a in pictures(during)] == [b.tobytes() for b in pictures(before)]
    assert during.infotexts == before.infotexts
    monkeypatch.setattr(DiscreteEpsDenoiser, "__call__", call)
    after = manager.txt2img(params, None)
    assert not np.array_equal(pictures(after)[0], pictures(before)[0])
    assert "Eta: 0.5" in after.infotexts[0] and "ENSD: 31337" in after.infotexts[0]
    assert "Clip skip: 2" in after.infotexts[0]


def test_unknown_settings_are_refused_and_nothing_is_stored(manager):
    from webui.engine.errors import UserError

    with pytest.raises(UserError, match="unknown setting.*no_such_thing"):
        manager.update_settings(eta_ancestral=0.3, no_such_thing=1)
    assert manager.settings.eta_ancestral == 1.0


@pytest.mark.parametrize("sampler, strength, expected", [
    ("Euler", None, 10), ("Heun", None, 20), ("DDIM", None, 10), ("UniPC", None, 10),
    ("Euler", 0.3, 4), ("Heun", 0.3, 8), ("DDIM", 0.3, 2), ("PLMS", 0.3, 3), ("UniPC", 0.3, 3),
])
def test_progress_counts_model_calls_for_every_sampler_family(manager, sampler, strength, expected):
    """Progress totals: steps × calls per step from noise; A1111's img2img counts from an init image
    (k-diffusion t_enc + 1, DDIM t_enc − 1, PLMS/UniPC t_enc; Heun calls the model twice per step)."""
    from PIL import Image

    seen = []
    params = small(steps=10, sampler_name=sampler)
    if strength is None:
        manager.txt2img(params, None, on_progress=lambda done, total: seen.append(total))
    else:
        init = Image.new("RGB", (64, 64), (120, 40, 200))
        manager.img2img(params.replace(denoising_strength=strength), init,
                        on_progress=lambda done, total: seen.append(total))
    assert set(seen) == {expected}
