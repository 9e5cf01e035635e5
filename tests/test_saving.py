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
