"""Saving generated images: A1111's folder layout and numbering (its file and folder name patterns: filenames.py),
with the infotext embedded."""
from __future__ import annotations

import datetime
import os
import re
import tempfile
import threading
from pathlib import Path

from PIL import Image

from ..settings import Settings
from . import filenames, metadata
from .filenames import Naming

__all__ = ["Naming", "clean_temp_files", "next_counter", "save_image", "save_text"]

_counter_lock = threading.Lock()
_leading_number = re.compile(r"^(\d+)")


TEMP_SUFFIX = ".png.tmp"
_temp_name = re.compile(r"^\.(\d+)-.*" + re.escape(TEMP_SUFFIX) + "$")


def clean_temp_files(outdir: Path) -> int:
    """Remove the half-written PNGs of processes that no longer run (a kill during a save), anywhere under outdir
    (the directory name pattern can make folders at any depth, or none); a temp file of a process that still
    runs is left alone. Returns how many were removed."""
    removed = 0
    for path in Path(outdir).rglob(f".*{TEMP_SUFFIX}"):
        m = _temp_name.match(path.name)
        if m is None or _alive(int(m.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    with _counter_lock:  # os.umask can only be read by setting it: restore it at once, one thread at a time
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def next_counter(folder: Path) -> int:
    """One more than the largest leading number of a file in folder (A1111's counter). Files only: with
    save_to_dirs off, the 2024-01-02 folders of earlier saves must not make the next number 2025 (A1111's does)."""
    with os.scandir(folder) as entries:
        numbers = [int(m.group(1)) for e in entries if (m := _leading_number.match(e.name)) and e.is_file()]
    return max(numbers, default=-1) + 1


def next_grid_counter(folder: Path, basename: str) -> int:
    """A1111's counter for named files (BASENAME-NNNN): one more than the largest among those."""
    pattern = re.compile(rf"^{re.escape(basename)}-(\d+)")
    with os.scandir(folder) as entries:
        numbers = [int(m.group(1)) for e in entries if (m := pattern.match(e.name)) and e.is_file()]
    return max(numbers, default=-1) + 1


def save_image(image: Image.Image, outdir: Path, seed: int | None, infotext: str | None,
               today: datetime.date | None = None, fmt: str = "png", texts: dict[str, str] | None = None,
               naming: Naming | None = None, basename: str = "") -> Path:
    """Write the picture with its infotext (metadata.py: PNG's `parameters` chunk, else EXIF UserComment;
    `texts`: more PNG chunks) and return its path. .jpg, .webp: the `samples_format` setting.

    Where, by `naming`'s settings (filenames.py; the defaults without it): outdir/DATE/NNNNN-SEED.png, A1111's
    "Save images to a subdirectory" with "[date]" and "Images filename pattern" "[seed]"; NNNNN.png without a
    seed. `today` stands in for the date of [date].

    Written to a temp file first and linked into place, so a reader never sees half a PNG and an existing
    file is never overwritten (a taken number moves on to the next; without numbers, "-1", "-2"… is added,
    A1111's "Add number suffix"). `basename`: A1111's short names for grids, BASENAME-NNNN.png."""
    naming = naming or Naming()
    settings = naming.settings or Settings()
    generator = filenames.FilenameGenerator(naming, seed, image, today or datetime.date.today())
    folder = Path(outdir).joinpath(*filenames.folder_parts(generator, settings))
    decoration = "" if basename else filenames.decoration(generator, settings)
    numbered = settings.save_images_add_number or not decoration
    folder.mkdir(parents=True, exist_ok=True)
    data = metadata.encode(image, infotext, fmt, texts)  # before a temp file exists: a bad format leaves nothing
    suffix = "jpg" if fmt.lower() == "jpeg" else fmt.lower()
    limit = filenames.name_max(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.getpid()}-", suffix=TEMP_SUFFIX, dir=folder)
    try:
        # mkstemp makes 0600 files; outputs get what an ordinary new file gets (0644 under the usual umask)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with _counter_lock:
            counter = (next_grid_counter(folder, basename) if basename else next_counter(folder)) if numbered else 0
            while True:
                if basename:
                    name = f"{filenames.safe_name(basename, limit - 16)}-{counter:04d}.{suffix}"
                elif numbered:
                    name = filenames.file_name(decoration, suffix, limit, counter)
                else:
                    name = filenames.file_name(decoration, suffix, limit, None, retry=counter)
                target = folder / name
                try:
                    os.link(tmp, target)
                    return target
                except FileExistsError:
                    counter += 1
                except OSError:  # no hard links on this filesystem: the lock still keeps names unique
                    if not target.exists():
                        os.replace(tmp, target)
                        open(tmp, "wb").close()  # for the unlink below
                        return target
                    counter += 1
    finally:
        os.unlink(tmp)


def save_text(picture: Path, infotext: str) -> Path:
    """A1111's "Save text information": the infotext in a .txt beside the picture, written whole or not at all."""
    target = Path(picture).with_suffix(".txt")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.getpid()}-", suffix=".txt.tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(infotext)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
