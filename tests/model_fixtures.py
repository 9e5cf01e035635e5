"""The tiny random checkpoints as fixtures for the model tests: SD1 written as .safetensors and .ckpt (`ckpt_files`,
`tiny_sd`, and `sd`, a copy each test may edit), and every family and variant on demand (`files`).

A pytest plugin: test modules load it with `pytest_plugins = ["model_fixtures"]` and never import it, so pytest
imports it first and can rewrite its asserts; the helpers to import are in model_cases.py."""
from __future__ import annotations

import pytest

from model_cases import read
from webui.engine.models import tiny


@pytest.fixture(scope="module")
def ckpt_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return {suffix: tiny.make_tiny_checkpoint(folder / f"tiny{suffix}") for suffix in (".safetensors", ".ckpt")}


@pytest.fixture(scope="module")
def tiny_sd(ckpt_files):
    return read(ckpt_files[".safetensors"])


@pytest.fixture
def sd(tiny_sd):
    return dict(tiny_sd)  # a shallow copy each test may edit


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_families")
    made = {}

    def get(family, inpainting=False, prediction="epsilon"):
        key = (family, inpainting, prediction)
        if key not in made:
            made[key] = tiny.make_tiny_checkpoint(folder / f"{family}-{inpainting}-{prediction}.safetensors",
                                                  family=family, inpainting=inpainting, prediction=prediction)
        return made[key]
    return get
