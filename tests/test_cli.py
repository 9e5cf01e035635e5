"""The headless CLI as a user runs it: a real subprocess, its stdout, stderr and exit code."""
import os
import subprocess
import sys

import pytest

from webui.engine.infotext import parse_infotext, read_png_infotext


def webui(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    return subprocess.run([sys.executable, "-m", "webui.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    result = webui("make-tiny-model", "tiny.safetensors", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("tiny.safetensors")
    return folder


def test_acceptance_command_prints_png_paths_with_a1111_infotext(tiny_model):
    result = webui("txt2img", "--ckpt", "tiny.safetensors", "--prompt", "a cat", "--steps", "10", "--seed", "7",
                   "--width", "64", "--height", "64", "--batch-size", "2", "--outdir", "out", cwd=tiny_model)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for seed, line in zip((7, 8), lines):
        path = tiny_model / line if not os.path.isabs(line) else line
        assert str(line).startswith("out/txt2img-images/") and line.endswith(f"-{seed}.png")
        text = read_png_infotext(path)
        assert text.startswith(f"a cat\nSteps: 10, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
                               f"Seed: {seed}, Size: 64x64, Model hash: ")
        assert text.endswith(", Model: tiny, RNG: CPU, Version: gouache-0.1.0")
        assert parse_infotext(text).model == "tiny"


@pytest.mark.parametrize("args, message", [
    (["--width", "65"], "error: width must be a multiple of 8, got 65"),
    (["--sampler", "Bogus"], "error: unknown sampler 'Bogus'"),
    (["--ckpt", "missing"], "error: checkpoint not found: 'missing'"),
])
def test_bad_input_exits_2_with_one_clear_line(tiny_model, args, message):
    base = ["txt2img", "--ckpt", "tiny.safetensors", "--steps", "2", "--width", "64", "--height", "64",
            "--outdir", "bad-out"]
    result = webui(*base, *args, cwd=tiny_model)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tiny_model / "bad-out").exists()


def test_argparse_errors_exit_2(tiny_model):
    result = webui("txt2img", "--steps", "many", cwd=tiny_model)
    assert result.returncode == 2 and "invalid int value" in result.stderr


def test_clip_skip_flag_reaches_the_infotext(tiny_model):
    result = webui("txt2img", "--ckpt", "tiny.safetensors", "--prompt", "a (cat:1.2)", "--steps", "2", "--width",
                   "64", "--height", "64", "--clip-skip", "2", "--outdir", "clip", cwd=tiny_model)
    assert result.returncode == 0, result.stderr
    assert "Clip skip: 2" in read_png_infotext(tiny_model / result.stdout.strip())


def test_bf16_precision_on_cpu(tiny_model):
    result = webui("txt2img", "--ckpt", "tiny.safetensors", "--prompt", "a cat", "--steps", "2", "--width", "64",
                   "--height", "64", "--precision", "bf16", "--outdir", "bf16", cwd=tiny_model)
    assert result.returncode == 0, result.stderr
    assert read_png_infotext(tiny_model / result.stdout.strip()).startswith("a cat\n")


def _write_images(folder):
    import numpy as np
    from PIL import Image

    Image.fromarray((np.random.RandomState(0).rand(64, 80, 3) * 255).astype(np.uint8)).save(folder / "init.png")
    mask = Image.new("L", (80, 64), 0)
    mask.paste(255, (20, 12, 60, 36))
    mask.save(folder / "mask.png")


def test_img2img_and_inpaint_commands(tiny_model):
    _write_images(tiny_model)
    base = ["img2img", "--ckpt", "tiny.safetensors", "--prompt", "a cat", "--steps", "4", "--seed", "3",
            "--init-image", "init.png", "--outdir", "i2i"]
    plain = webui(*base, "--scale", "1", "--denoising-strength", "0.5", "--resize-mode", "Crop and resize",
                  cwd=tiny_model)
    assert plain.returncode == 0, plain.stderr
    path = plain.stdout.strip()
    assert path.startswith("i2i/img2img-images/") and path.endswith("-3.png")
    text = read_png_infotext(tiny_model / path)
    assert "Size: 80x64," in text and "Denoising strength: 0.5," in text

    inpaint = webui(*base, "--width", "64", "--height", "64", "--mask", "mask.png", "--masked-content", "fill",
                    "--only-masked", "--only-masked-padding", "8", "--invert-mask", cwd=tiny_model)
    assert inpaint.returncode == 0, inpaint.stderr
    text = read_png_infotext(tiny_model / inpaint.stdout.strip())
    assert ("Denoising strength: 0.75, RNG: CPU, Mask mode: Inpaint not masked, Mask blur: 4, "
            "Inpaint area: Only masked, Masked area padding: 8, Masked content: fill") in text


@pytest.mark.parametrize("args, message", [
    (["--init-image", "nope.png"], "error: Cannot decode the image"),
    (["--init-image", "init.png", "--denoising-strength", "2"], "error: denoising strength must be between"),
    (["--init-image", "init.png", "--resize-mode", "Stretch"], "error: Unknown resize mode 'Stretch'"),
    (["--init-image", "init.png", "--mask", "tiny.safetensors"], "error: Cannot decode the image"),
])
def test_img2img_bad_input(tiny_model, args, message):
    _write_images(tiny_model)
    result = webui("img2img", "--ckpt", "tiny.safetensors", "--steps", "2", "--width", "64", "--height", "64",
                   "--outdir", "bad-i2i", *args, cwd=tiny_model)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(message)
    assert "Traceback" not in result.stderr
    assert not (tiny_model / "bad-i2i").exists()


def test_progress_bar_for_a_terminal_and_nothing_for_a_pipe():
    import io

    from webui.cli import ProgressBar

    terminal = io.StringIO()
    bar = ProgressBar(terminal, enabled=True)
    for done in range(0, 7):
        bar(done, 6)
    assert "Sampling:" in terminal.getvalue() and "/6 [" in terminal.getvalue()  # tqdm redraws at most every 0.1 s
    piped = io.StringIO()  # not a TTY: isatty() is False
    quiet = ProgressBar(piped)
    quiet(3, 6)
    assert piped.getvalue() == ""


@pytest.mark.parametrize("cpu_bf16, flags, expected", [
    ("1", [], "bfloat16"), ("0", [], "float32"), ("1", ["--precision", "full"], "float32"),
    ("1", ["--no-half"], "float32"), ("0", ["--precision", "bf16"], "bfloat16")])
def test_precision_auto_is_bf16_only_on_a_cpu_that_computes_it(monkeypatch, tmp_path, cpu_bf16, flags, expected):
    """--precision auto (the default) on the CPU: bf16 where the CPU has native bf16 (bench/precision.py: mean
    |Δ| 0.39/255 against fp32 on the demo model), fp32 elsewhere; an explicit choice wins."""
    from webui import cli

    monkeypatch.setenv("GOUACHE_CPU_BF16", cpu_bf16)
    args = cli.txt2img_parser().parse_args(["--prompt", "x", "--data-dir", str(tmp_path), "--device", "cpu", *flags])
    manager = cli._manager(args)
    assert str(manager.dtype) == f"torch.{expected}"
    assert str(manager.vae_dtype) == ("torch.float32" if "--no-half" in flags else f"torch.{expected}")
