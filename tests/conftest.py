import os
import shutil
import socket
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# the pixel references are fp32: --precision auto must not pick bf16 on a CPU that has it (tests/test_cli.py
# checks the choice itself)
os.environ["GOUACHE_CPU_BF16"] = "0"


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """The same tiny random model written as .safetensors and as .ckpt (built once per session)."""
    from webui.engine.models.tiny import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny")
    return {
        "safetensors": make_tiny_checkpoint(folder / "tiny.safetensors", seed=0),
        "ckpt": make_tiny_checkpoint(folder / "tiny.ckpt", seed=0),
        "other": make_tiny_checkpoint(folder / "other.safetensors", seed=1),
    }


@pytest.fixture
def data_dir(tmp_path, tiny_files) -> Path:
    """A fresh data dir with models/Stable-diffusion/tiny.safetensors in it."""
    ckpt_dir = tmp_path / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(tiny_files["safetensors"], ckpt_dir / "tiny.safetensors")
    return tmp_path


@pytest.fixture
def manager(data_dir):
    from webui.engine.manager import PipelineManager

    m = PipelineManager(data_dir / "models" / "Stable-diffusion", data_dir, device="cpu")
    m.load("tiny")
    return m


def small(**kw):
    """A fast request: 64×64, few steps."""
    from webui.engine.params import GenerationParams

    defaults = dict(prompt="a cat", negative_prompt="ugly", steps=6, width=64, height=64, seed=1234)
    defaults.update(kw)
    return GenerationParams(**defaults)


def serve_app(demo, data_dir, tries: int = 3) -> str:
    """Launch a built app on a free local port (outputs in data_dir/outputs); its URL. gradio checks the new
    server answers within a few seconds and gives up otherwise (seen once on a loaded CI machine): then the
    launch is retried on a fresh port."""
    for attempt in range(tries):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                                allowed_paths=[str(data_dir / "outputs")])
            return f"http://127.0.0.1:{port}/"
        except ValueError as e:
            if "localhost is not accessible" not in str(e) or attempt == tries - 1:
                raise
            demo.close()
    raise AssertionError("unreachable")


@pytest.fixture
def launched(manager, data_dir):
    """(demo, url): the whole app served on a free port, outputs in data_dir/outputs."""
    from webui.ui.app import build_app

    demo = build_app(manager, data_dir / "outputs", "tiny.safetensors")
    yield demo, serve_app(demo, data_dir)
    demo.close()


@pytest.fixture
def served(launched) -> str:
    return launched[1]


@pytest.fixture
def slow_steps(monkeypatch):
    """Every sampler step takes at least 40 ms (call the fixture's value with other seconds to change it), so a
    test can act while a job runs: poll progress, interrupt, skip, see previews."""
    from webui.engine.manager import PipelineManager

    delay = {"seconds": 0.04}
    original = PipelineManager._control

    def slowed(self, *args, **kwargs):
        control = original(self, *args, **kwargs)
        report = control.on_step

        def on_step(*step_args):
            time.sleep(delay["seconds"])
            report(*step_args)
        control.on_step = on_step
        return control
    monkeypatch.setattr(PipelineManager, "_control", slowed)
    return lambda seconds: delay.update(seconds=seconds)
