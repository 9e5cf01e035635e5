"""Saved outputs: ordinary file permissions (the umask's, not mkstemp's 0600), nothing left behind."""
from __future__ import annotations

import os
import stat

from PIL import Image

from webui.engine.imaging.saving import save_image


def test_saved_png_gets_the_umask_permissions_and_no_temp_file(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "a cat\nSteps: 1")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        private = save_image(Image.new("RGB", (8, 8)), tmp_path, 8, "a cat\nSteps: 1")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(previous)
    assert sorted(p.name for p in path.parent.iterdir()) == ["00000-7.png", "00001-8.png"]


def test_dead_temp_files_are_found_at_any_depth(tmp_path):
    """The directory name pattern can put pictures in outdir itself or folders below folders."""
    import subprocess
    import sys

    from webui.engine.imaging.saving import clean_temp_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    deep = tmp_path / "tiny" / "2024-01-02"
    deep.mkdir(parents=True)
    for folder in (tmp_path, deep):
        (folder / f".{dead}-abc.png.tmp").write_bytes(b"half a png")
    assert clean_temp_files(tmp_path) == 2
    assert not list(tmp_path.rglob("*.tmp"))
