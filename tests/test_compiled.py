"""Compiled mode (--compile): the same pictures as eager, one compile per picture size (a second job of that size
compiles nothing), and a backend that cannot compile leaves the job running eagerly with one warning. Dynamo's
"eager" backend stands in for inductor here (tracing without code generation: seconds, not minutes, on a CPU);
bench/compare.py times inductor itself."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import small
from webui.engine.models import compiled


@pytest.fixture
def make_manager(data_dir):
    from webui.engine.manager import PipelineManager

    def make(compile):
        torch._dynamo.reset()
        m = PipelineManager(data_dir / "models" / "Stable-diffusion", data_dir, device="cpu", compile=compile)
        m.load("tiny")
        return m
    yield make
    torch._dynamo.reset()


def test_compiled_pictures_equal_eager_and_a_size_compiles_once(make_manager):
    eager = make_manager(None)
    reference = np.asarray(eager.txt2img(small(steps=2), None).images[0])
    manager = make_manager("eager")
    unet = manager.current.components.unet
    assert compiled.is_compiled(unet) and compiled.is_compiled(manager.current.components.vae.decoder)
    first = np.asarray(manager.txt2img(small(steps=2), None).images[0])
    shapes_after_first = set(unet.forward.seen)
    second = np.asarray(manager.txt2img(small(steps=2), None).images[0])
    assert unet.forward.seen == shapes_after_first, "the same size again: nothing new to compile"
    assert len(shapes_after_first) == 1, "one picture size, one CFG batch: one graph"
    assert np.array_equal(first, reference) and np.array_equal(second, reference)


def test_a_backend_that_cannot_compile_falls_back_with_one_warning(caplog):
    def broken(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    torch._dynamo.reset()
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
    x = torch.randn(2, 4)
    want = layer(x)
    layer.forward = compiled.CompiledForward(layer.forward, "UNet", broken)
    with caplog.at_level(logging.WARNING, logger="webui.engine.models.compiled"):
        outs = [layer(x) for _ in range(3)]
    assert all(torch.equal(out, want) for out in outs)
    warnings = [r.getMessage() for r in caplog.records if "could not be compiled" in r.getMessage()]
    assert len(warnings) == 1 and "UNet" in warnings[0] and "no C++ compiler here" in warnings[0]
    assert layer.forward.failed
    torch._dynamo.reset()
