"""Model families as objects: what each family owns, that a new family is one definition plus one registration,
and the family's own schedule table reaching a whole job (Align Your Steps on SDXL used SD1.5's table before)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import small
from webui.engine.manager import PipelineManager
from webui.engine.models.families import (
    TextTower,
    all_families,
    family_for_towers,
    get_family,
    register,
    unregister,
)
from webui.engine.models.families.sd1 import AYS_SD15, SD1, SD1_FAMILY
from webui.engine.models.families.sdxl import AYS_SDXL
from webui.engine.models.tiny import make_tiny_checkpoint
from webui.engine.samplers.denoiser import DiscreteEpsDenoiser


def test_the_four_families_and_what_they_own():
    assert [f.key for f in all_families()][:4] == ["sd1", "sd2", "sdxl", "sdxl_refiner"]
    sd1, sd2, sdxl, refiner = (get_family(k) for k in ("sd1", "sd2", "sdxl", "sdxl_refiner"))
    assert (sd1.clip_skip, sd1.clip_final_norm, sd1.head_dim_64) == (1, True, False)
    assert (sd2.clip_skip, sd2.clip_final_norm, sd2.head_dim_64) == (2, True, True)
    assert (sdxl.clip_skip, sdxl.clip_final_norm, sdxl.n_time_ids, refiner.n_time_ids) == (2, False, 6, 5)
    assert sd1.ays_sigmas == sd2.ays_sigmas == AYS_SD15 and sdxl.ays_sigmas == refiner.ays_sigmas == AYS_SDXL
    assert (sd1.latent.scale_factor, sdxl.latent.scale_factor) == (0.18215, 0.13025)
    assert [t.pad_id for t in sdxl.towers] == [None, 0] and sd2.towers[0].pad_id == 0
    assert sdxl.time_ids(64, 96).tolist() == [[64, 96, 0, 0, 64, 96]]
    # the refiner: A1111's aesthetic score 6 for the prompt, 2.5 for the negative prompt
    assert refiner.time_ids(64, 64).tolist() == [[64, 64, 0, 0, 6.0], [64, 64, 0, 0, 2.5]]
    assert sd1.time_ids(64, 64) is None and not sd1.zero_empty_negative and sdxl.zero_empty_negative
    assert family_for_towers("conditioner", ("openclip",)) is refiner
    with pytest.raises(ValueError, match="unknown architecture family 'sd3'"):
        get_family("sd3")


def test_latent_preview_is_the_familys_linear_map():
    latent = torch.zeros(4, 2, 2)
    latent[0] = 1.0
    preview = get_family("sdxl").latent.preview(latent)
    expected = torch.tensor([0.3651 + 0.1084, 0.4232 - 0.0175, 0.4341 - 0.0011])
    assert preview.shape == (3, 2, 2) and torch.allclose(preview[:, 0, 0], expected)


# ---------------------------------------------------------------------------------------------- a new family

class WideSD1(SD1):
    """A made-up family: SD1's UNet and VAE with its CLIP tower stored SDXL-style (conditioner.embedders.0),
    shown as "Wide SD1", conditioning on the penultimate layer."""


WIDE = WideSD1(**{**{f.name: getattr(SD1_FAMILY, f.name) for f in dataclasses.fields(SD1_FAMILY)},
                  "key": "wide_sd1", "label": "Wide SD1", "clip_skip": 2,
                  "towers": (TextTower("conditioner.embedders.0.transformer.text_model.", "clip",
                                       "CLIP text encoder"), None)})


@pytest.fixture
def wide_family(monkeypatch):
    monkeypatch.setattr(WideSD1, "config_dir", SD1_FAMILY.config_dir)  # SD1's config skeletons
    register(WIDE)
    yield WIDE
    unregister(WIDE.key)


def test_a_new_family_is_one_definition_and_one_registration(wide_family, tmp_path):
    """Detection, building, the tiny builder, prompt encoding and generation pick the new family up."""
    folder = tmp_path / "models" / "Stable-diffusion"
    make_tiny_checkpoint(folder / "wide.safetensors", family="wide_sd1")
    make_tiny_checkpoint(folder / "sd1.safetensors", family="sd1")  # same seed: the same module weights
    manager = PipelineManager(folder, tmp_path, device="cpu")
    loaded = manager.load("wide")
    assert (loaded.components.arch.family, loaded.components.arch.name) == ("wide_sd1", "Wide SD1")
    assert loaded.encoder.hidden_layer == -2  # the family's conditioning layer
    wide = np.asarray(manager.txt2img(small(steps=3), None).images[0])
    manager.load("sd1")
    plain = np.asarray(manager.txt2img(small(steps=3), None).images[0])
    assert wide.std() > 1 and not np.array_equal(wide, plain)  # same weights, the family's own text layer
    assert manager.load("sd1").components.arch.family == "sd1"


# ---------------------------------------------------------------------------------------- Align Your Steps

@pytest.mark.parametrize("family, table", [("sd1", AYS_SD15), ("sdxl", AYS_SDXL)])
def test_align_your_steps_uses_the_familys_table_in_a_whole_job(tmp_path, monkeypatch, family, table):
    folder = tmp_path / "models" / "Stable-diffusion"
    make_tiny_checkpoint(folder / f"{family}.safetensors", family=family)
    manager = PipelineManager(folder, tmp_path, device="cpu")
    manager.load(family)
    seen = []
    call = DiscreteEpsDenoiser.__call__

    def record(self, x, sigma, *args, **kwargs):
        seen.append(round(float(sigma[0]), 3))
        return call(self, x, sigma, *args, **kwargs)

    monkeypatch.setattr(DiscreteEpsDenoiser, "__call__", record)
    processed = manager.txt2img(small(steps=11, sampler_name="Euler", scheduler="Align Your Steps"), None)
    assert seen == list(table)  # Euler evaluates the model once at each of the table's 11 sigmas
    assert "Schedule type: Align Your Steps" in processed.infotexts[0]


def test_no_family_names_outside_the_models_package():
    """Code outside webui/engine/models asks the family object; it never tests family names."""
    found = subprocess.run(["grep", "-rnE", r'"sdxl"|"sd1"|"sd2"|"sdxl_refiner"|family ==', "webui/",
                            "--include=*.py"], capture_output=True, text=True, cwd=_root()).stdout.splitlines()
    assert [line for line in found if not line.startswith("webui/engine/models/")] == []


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_every_engine_module_imports_alone():
    """No import cycles: each engine module imported first, alone, in a fresh interpreter."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    root = _root()
    modules = sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                     for p in (root / "webui" / "engine").rglob("*.py"))
    assert "webui.engine.samplers.kdiffusion" in modules and len(modules) > 30

    def try_import(module):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=root)
        return None if done.returncode == 0 else (module, done.stderr.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failures = [f for f in pool.map(try_import, modules) if f]
    assert failures == []
