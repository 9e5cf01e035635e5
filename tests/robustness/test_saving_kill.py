"""Images are written as they are made: a killed batch keeps every finished image, complete, with its infotext,
and the next start removes what a kill left half-written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from PIL import Image

from webui.engine.imaging.saving import clean_temp_files
from webui.engine.infotext import read_png_infotext


def test_kill_during_a_batch_keeps_each_finished_image(tmp_path, tiny_files):
    outdir = tmp_path / "out"
    command = [sys.executable, "-m", "webui.cli", "txt2img", "--ckpt", str(tiny_files["safetensors"]),
               "--prompt", "a cat", "--steps", "30", "--width", "64", "--height", "64", "--n-iter", "40",
               "--seed", "1", "--outdir", str(outdir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    printed = []
    try:
        while len(printed) < 2:
            line = job.stdout.readline()
            assert line, "the CLI ended before printing two paths"
            printed.append(line.strip())
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    pngs = sorted(outdir.rglob("*.png"))
    assert len(pngs) >= 2 and {str(p) for p in pngs} >= set(printed)
    for png in pngs:  # every file there is a complete picture with its parameters
        with Image.open(png) as image:
            image.load()
            assert image.size == (64, 64)
        assert read_png_infotext(png).startswith("a cat\nSteps: 30")
    clean_temp_files(outdir / "txt2img-images")  # what the next start does
    assert not [p for p in outdir.rglob("*") if p.name.endswith(".png.tmp")]


def test_temp_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    folder = tmp_path / "2026-11-30"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (folder / f".{dead}-abc.png.tmp").write_bytes(b"half a png")
    (folder / f".{os.getpid()}-def.png.tmp").write_bytes(b"being written")
    assert clean_temp_files(tmp_path) == 1
    assert [p.name for p in folder.iterdir()] == [f".{os.getpid()}-def.png.tmp"]
