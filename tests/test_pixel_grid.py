"""Every sampler × SD1 / SD2-v / SDXL tiny models × txt2img / img2img / inpaint: pixel hashes against a record.

The record (tests/data/pixel_grid.json) was made before the engine was reorganised (issue 12) so that the
reorganisation can prove it changed no picture. A change here is a change of every user's pictures at the same
seed: make it only on purpose, then re-record with `GOUACHE_RECORD_GRID=1 ./run-tests.sh tests/test_pixel_grid.py`
and say in the commit which entries changed and why. Hashes are of the 8-bit pixels and depend on the float32
kernels torch picks for the CPU (its `get_cpu_capability()`: AVX512 and AVX2 machines round differently), so the
record keeps one table per capability; a new one is recorded the same way, at a commit known to be right.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RECORD = Path(__file__).parent / "data" / "pixel_grid.json"
FAMILIES = {"sd1": dict(family="sd1"), "sd2v": dict(family="sd2", prediction="v_prediction"),
            "sdxl": dict(family="sdxl")}
MODES = ("txt2img", "img2img", "inpaint")
# Schedules outside each sampler's Automatic choice that a family decides (Align Your Steps has one table per
# family).
EXTRA_SCHEDULES = ("Align Your Steps",)


def _sampler_names():
    from webui.engine.samplers import SAMPLERS

    return [s.name for s in SAMPLERS]


def _cases():
    cases = []
    for family in FAMILIES:
        for sampler in _sampler_names():
            cases += [(family, sampler, "Automatic", mode) for mode in MODES]
        cases += [(family, "Euler", schedule, "txt2img") for schedule in EXTRA_SCHEDULES]
    return cases


def _init_image() -> Image.Image:
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


def _mask() -> Image.Image:
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:40] = 255
    return Image.fromarray(mask)


@pytest.fixture(scope="module")
def grid_manager(tmp_path_factory):
    from webui.engine.manager import PipelineManager
    from webui.engine.models.tiny import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("grid")
    for name, kw in FAMILIES.items():
        make_tiny_checkpoint(folder / f"{name}.safetensors", seed=3, **kw)
    manager = PipelineManager(folder, folder, device="cpu")
    manager.settings.sd_checkpoints_limit = len(FAMILIES)
    return manager


def cpu_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


@pytest.fixture(scope="module")
def record():
    tables = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    capability = cpu_capability()
    recorded = tables.get(capability, {})
    fresh: dict[str, str] = {}
    yield recorded, fresh
    if os.environ.get("GOUACHE_RECORD_GRID") == "1":
        RECORD.parent.mkdir(exist_ok=True)
        tables[capability] = {**recorded, **fresh}
        RECORD.write_text(json.dumps(tables, indent=1, sort_keys=True) + "\n")


def _run(manager, family, sampler, schedule, mode) -> np.ndarray:
    from webui.engine.params import GenerationParams

    params = GenerationParams(prompt="a red (cat:1.2) on a [blue:green:2] sofa", negative_prompt="blurry",
                              steps=4, cfg_scale=6.5, seed=77, width=64, height=64, sampler_name=sampler,
                              scheduler=schedule, model=family)
    if mode == "txt2img":
        processed = manager.txt2img(params, None)
    else:
        params = params.replace(denoising_strength=0.6)
        processed = manager.img2img(params, _init_image(), _mask() if mode == "inpaint" else None)
    return np.asarray(processed.images[0])


@pytest.mark.parametrize("family,sampler,schedule,mode", _cases())
def test_pixels_are_the_recorded_ones(grid_manager, record, family, sampler, schedule, mode):
    recorded, fresh = record
    key = f"{family} | {sampler} | {schedule} | {mode}"
    pixels = _run(grid_manager, family, sampler, schedule, mode)
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()[:16]
    fresh[key] = digest
    if os.environ.get("GOUACHE_RECORD_GRID") == "1":
        pytest.skip("recording")
    assert key in recorded, f"no recorded hash for {key} on {cpu_capability()}: record with GOUACHE_RECORD_GRID=1"
    assert digest == recorded[key]
