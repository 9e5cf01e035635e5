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


def test_a_batch_also_saves_its_grid_as_a1111(manager, tmp_path):
    """Four pictures → outputs/txt2img-grids/DATE/grid-0000.png, 2×2 (A1111's autodetected rows), carrying the
    first picture's infotext; one picture → no grid; the setting off → no grid."""
    import numpy as np
    from PIL import Image

    from conftest import small
    from webui.engine.infotext import read_png_infotext

    processed = manager.txt2img(small(steps=2, seed=3, batch_size=2, n_iter=2), tmp_path)
    grids = sorted((tmp_path / "txt2img-grids").rglob("*.png"))
    assert [g.name for g in grids] == ["grid-0000.png"] and processed.grid_path == grids[0]
    grid = Image.open(grids[0])
    assert grid.size == (128, 128)
    cells = [np.asarray(grid.convert("RGB").crop((x, y, x + 64, y + 64))) for y in (0, 64) for x in (0, 64)]
    assert all(np.array_equal(cell, np.asarray(image)) for cell, image in zip(cells, processed.images))
    assert read_png_infotext(grids[0]) == processed.infotexts[0]
    manager.txt2img(small(steps=2, seed=3, batch_size=2), tmp_path)
    assert sorted(g.name for g in (tmp_path / "txt2img-grids").rglob("*.png")) == ["grid-0000.png", "grid-0001.png"]
    manager.txt2img(small(steps=2, seed=3), tmp_path)
    manager.update_settings(grid_save=False)
    manager.txt2img(small(steps=2, seed=3, batch_size=2), tmp_path)
    assert len(list((tmp_path / "txt2img-grids").rglob("*.png"))) == 2
