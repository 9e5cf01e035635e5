"""The LoRA files on disk (models/Lora and its subfolders): names, aliases, previews, metadata and hashes.

A file is found in a prompt tag by its file name without extension (A1111's name), its training alias
(`ss_output_name` in the safetensors metadata, when no other file claims the same word) or its path relative to
the folder ("style/ink"). The listing reads only each safetensors header, so hundreds of files list quickly.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..models.checkpoints import HashCache, file_sha256
from .formats import LoraError

log = logging.getLogger(__name__)

EXTENSIONS = (".safetensors", ".pt", ".ckpt")
PREVIEW_SUFFIXES = (".png", ".preview.png", ".jpg", ".jpeg", ".preview.jpg", ".webp", ".preview.webp")
_MAX_HEADER = 100 << 20


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's JSON header ({} for other files or a header without it)."""
    if path.suffix != ".safetensors":
        return {}
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > _MAX_HEADER:
                return {}
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def addnet_hash(path: Path) -> str:
    """A1111's LoRA hash: sha256 of a safetensors file's tensor data (after the 8-byte length and the JSON
    header), of the whole file otherwise."""
    start = 0
    if path.suffix == ".safetensors":
        with open(path, "rb") as f:
            start = 8 + struct.unpack("<Q", f.read(8))[0]
    return file_sha256(path, start)


@dataclass
class LoraInfo:
    name: str           # file name without extension, as A1111
    path: Path
    relative: str       # "sub/folder/name", for search and as an unambiguous name
    alias: str          # ss_output_name, or name
    preview: Path | None = None
    stamp: tuple = ()   # (size, mtime_ns): a changed file is re-read and re-merged
    _metadata: dict | None = field(default=None, repr=False)

    def metadata(self) -> dict[str, str]:
        if self._metadata is None:
            self._metadata = read_metadata(self.path)
        return self._metadata

    @property
    def fingerprint(self) -> str:
        return f"{self.path}:{self.stamp}"


def _preview(path: Path, root: Path) -> Path | None:
    """The preview image beside a LoRA file. A preview that resolves outside the LoRA folder (a symlink, e.g.
    from an unpacked archive, to any file on the machine) is never offered: the browser would be served it."""
    stem = path.with_suffix("")
    for suffix in PREVIEW_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            if not Path(os.path.realpath(candidate)).is_relative_to(os.path.realpath(root)):
                log.warning("LoRA preview %s points outside %s: not shown", candidate, root)
                return None
            return candidate
    return None


class LoraLibrary:
    def __init__(self, root: Path, hashes: HashCache):
        self.root = Path(root)
        self.hashes = hashes
        self._lock = threading.Lock()
        self._items: list[LoraInfo] | None = None
        self._known: dict[Path, LoraInfo] = {}  # path → info, reused across refreshes while unchanged

    def list(self) -> list[LoraInfo]:
        with self._lock:
            if self._items is None:
                self._items = self._scan()
            return list(self._items)

    def refresh(self) -> list[LoraInfo]:
        with self._lock:
            self._items = self._scan()
            return list(self._items)

    def _scan(self) -> list[LoraInfo]:
        found: list[LoraInfo] = []
        if not self.root.is_dir():
            return found
        for path in sorted(p for p in self.root.rglob("*") if p.suffix in EXTENSIONS and p.is_file()):
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            old = self._known.get(path)
            if old is not None and old.stamp == stamp:
                old.preview = _preview(path, self.root)
                found.append(old)
                continue
            relative = path.relative_to(self.root).with_suffix("").as_posix()
            meta = read_metadata(path)
            info = LoraInfo(path.stem, path, relative, meta.get("ss_output_name") or path.stem, _preview(path, self.root),
                            stamp, meta)
            found.append(info)
        self._known = {info.path: info for info in found}
        return found

    def find(self, name: str) -> LoraInfo:
        """The file a tag names: file name, then relative path, then alias (an alias two files share names
        neither, as A1111's forbidden aliases). Re-scans once before giving up (a file just dropped in)."""
        for attempt in range(2):
            items = self.list() if attempt == 0 else self.refresh()
            for key in ("name", "relative"):
                for info in items:
                    if getattr(info, key) == name:
                        return info
            by_alias = [info for info in items if info.alias == name]
            if len(by_alias) == 1:
                return by_alias[0]
        raise LoraError(f"LoRA not found: {name!r} (no such file or alias in {self.root}; "
                        f"{len(items)} LoRA files there)")

    def short_hash(self, info: LoraInfo) -> str:
        """A1111's 12-hex "Lora hashes" entry: the metadata's sshs_model_hash, else the addnet hash."""
        known = info.metadata().get("sshs_model_hash")
        if known:
            return known[:12]
        return self.hashes.digest(info.path, "addnet", addnet_hash)[:12]
