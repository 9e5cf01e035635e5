"""Mistakes and broken files met by the engine: each one named in one clear message (a warning when the job can
go on), and the loaded model left exactly as it was."""
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import small
from webui.engine.errors import UserError
from webui.engine.infotext import format_infotext, parse_infotext
from webui.engine.lora import LoraError, build_key_map, named_modules


def pixels(manager, **kw):
    return np.asarray(manager.txt2img(small(steps=2, **kw), None).images[0])


# ------------------------------------------------------------------------------------------- embeddings


class RunsCode:
    """What a malicious embedding holds: unpickling it runs a shell command."""
    command = None

    def __reduce__(self):
        return (os.system, (self.command,))


def test_an_embedding_pickle_that_would_run_code_is_skipped_with_a_warning(manager, data_dir, tmp_path, caplog):
    marker = tmp_path / "ran"
    RunsCode.command = f"touch {marker}"
    folder = data_dir / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_param": {"*": torch.zeros(1, 32)}, "x": RunsCode()}, folder / "evil.pt")
    with caplog.at_level(logging.WARNING, logger="webui.engine.prompts.embeddings"):
        assert manager.refresh_embeddings()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("refused to load embedding evil.pt" in w and "could run code" in w for w in warnings), warnings
    assert "evil" not in manager.embeddings.loaded and not marker.exists()
    assert manager.txt2img(small(steps=1, prompt="evil cat"), None).images  # the prompt still generates
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------- LoRA


def test_a_lora_with_this_models_names_but_other_shapes_says_so(manager, data_dir):
    parts = manager.current.components
    comps = {"unet": parts.unet, "text_encoder": parts.text_encoder, "text_encoder_2": parts.text_encoder_2}
    modules = named_modules(comps)
    state_dict = {}
    for key, target in build_key_map(comps).items():  # rank 4, each width ten times the model's
        module = modules[target]
        if key.startswith("lora_unet_down") and isinstance(module, torch.nn.Linear):
            out, inp = module.weight.shape
            state_dict[f"{key}.lora_down.weight"] = torch.zeros(4, inp * 10)
            state_dict[f"{key}.lora_up.weight"] = torch.zeros(out * 10, 4)
    folder = data_dir / "models" / "Lora"
    folder.mkdir(parents=True)
    save_file(state_dict, str(folder / "wide.safetensors"))
    weights = {k: v.clone() for k, v in manager.current.components.unet.state_dict().items()}
    before = pixels(manager)
    with pytest.raises(LoraError) as error:
        manager.txt2img(small(prompt="a cat <lora:wide:1>"), None)
    n = len(state_dict) // 2
    message = str(error.value)
    assert message.startswith(f"LoRA 'wide' does not fit this model: {n} modules have the wrong shape (e.g. "
                              f"lora_unet_down"), message
    assert "vs the model's [" in message and message.endswith("it was made for another architecture")
    assert "none of its" not in message
    after = manager.current.components.unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    assert np.array_equal(pixels(manager), before)


# ---------------------------------------------------------------------------------------- checkpoints


def test_after_unload_the_next_job_reloads_the_model_that_was_loaded(manager, tiny_files):
    shutil.copy(tiny_files["other"], manager.ckpt_dir / "another.safetensors")  # sorts before tiny
    (manager.ckpt_dir / "aaa-broken.safetensors").write_bytes(b"not a model")  # sorts first of all
    manager.select("another")  # chosen in the dropdown (a job naming a checkpoint does not choose it)
    before = pixels(manager)
    manager.unload()
    assert manager.current is None
    assert np.array_equal(pixels(manager), before)
    assert manager.current.info.name == "another.safetensors"


def test_without_any_model_before_a_broken_first_file_is_a_clear_error(data_dir, tiny_files):
    from webui.engine.manager import PipelineManager

    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    (ckpt_dir / "aaa-broken.safetensors").write_bytes(b"not a model")
    m = PipelineManager(ckpt_dir, data_dir, device="cpu")
    with pytest.raises(UserError, match=r"no checkpoint chosen, and the first one in .*, aaa-broken\.safetensors, "
                                        r"cannot be loaded: cannot read aaa-broken\.safetensors"):
        m.txt2img(small(steps=1), None)
    assert m.current is None
    assert m.txt2img(small(steps=1, model="tiny"), None).images  # naming one works


def test_a_checkpoint_of_unusable_tensors_is_a_clear_error(manager, tiny_files):
    state_dict = load_file(str(tiny_files["safetensors"]))
    key = next(k for k in state_dict if k.startswith("cond_stage_model."))
    state_dict[key] = state_dict[key].to(torch.int64)  # right name and shape, no floating point
    save_file(state_dict, str(manager.ckpt_dir / "ints.safetensors"))
    with pytest.raises(UserError, match=r"cannot load ints\.safetensors: it is not a usable checkpoint"):
        manager.load("ints")
    assert manager.current.info.name == "tiny.safetensors"


def test_cli_broken_first_checkpoint_is_one_error_line(data_dir, capsys):
    from webui import cli

    (data_dir / "models" / "Stable-diffusion" / "aaa-broken.safetensors").write_bytes(b"not a model")
    code = cli.main(["txt2img", "--data-dir", str(data_dir), "--prompt", "x", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no checkpoint chosen") and "aaa-broken.safetensors" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("scale, message", [
    ("0", "--scale must be a number above 0 and at most 8, got 0.0"),
    ("0.01", "--scale 0.01 makes the 64x64 init image 8x8; width and height must be between 64 and 2048"),
    ("8", "--scale 8 makes the 640x64 init image 5120x512; width and height must be between 64 and 2048"),
])
def test_img2img_scale_mistakes_name_the_scale(tmp_path, capsys, scale, message):
    from PIL import Image

    from webui import cli

    init = tmp_path / "init.png"
    Image.new("RGB", (640 if scale == "8" else 64, 64)).save(init)
    code = cli.main(["img2img", "--data-dir", str(tmp_path), "--init-image", str(init), "--scale", scale,
                     "--prompt", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {message}\n"


# -------------------------------------------------------------------------------------------- infotext


@pytest.mark.parametrize("fields", [
    "Steps: 20, Sampler: Euler, Seed: 5, Size: 64x64, Seed: 99999999999999999999",
    "Steps: 20, Sampler: Euler, Seed: 5, Size: 64x64, Steps: abc",
    "Steps: 20, Sampler: Euler, Seed: 5, Size: 64x64, Steps: 30, Seed: 7, Foo: a, Foo: b",
    "Steps: abc, Sampler: Euler, Seed: 5, Size: 64x64, Steps: 30",
])
def test_an_infotext_key_given_twice_round_trips_stably(fields):
    first = parse_infotext(f"a cat\n{fields}, Version: v1")  # a Version: the writer adds ours otherwise
    again = parse_infotext(format_infotext(first))
    assert again == first
    assert format_infotext(again) == format_infotext(first)


def test_an_infotext_key_given_twice_takes_the_last_value():
    p = parse_infotext("a cat\nSteps: 20, Sampler: Euler, Seed: 5, Steps: 30, Seed: 99999999999999999999")
    assert p.steps == 30 and p.seed == -1 and p.extra["Seed"] == "99999999999999999999"
