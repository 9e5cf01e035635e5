"""ControlNet files in models/ControlNet: listed recursively, named "name [hash]" with A1111's old 8-hex hash,
matched as the extension matches a request's model name."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


def old_hash(path: Path) -> str:
    """A1111's model_hash: sha256 of the 64 KiB at 1 MiB into the file, first 8 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(0x100000)
        digest.update(f.read(0x10000))
    return digest.hexdigest()[:8]


@dataclass(frozen=True)
class ControlNetFile:
    path: Path

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def title(self) -> str:
        return f"{self.name} [{old_hash(self.path)}]"


def list_files(folder: Path) -> list[ControlNetFile]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()]
    return [ControlNetFile(p) for p in sorted(found, key=lambda p: p.name.lower())]


def find(query: str, folder: Path) -> ControlNetFile:
    """The extension's order: the exact title, then the name (with or without suffix), then the shortest name
    that contains the text."""
    files = list_files(folder)
    text = str(query or "").strip()
    if not text or text.lower() == "none":
        raise UserError("choose a ControlNet model")
    for f in files:
        if f.title == text:
            return f
    bare = text.split(" [")[0]
    for f in files:
        if bare in (f.name, f.path.name):
            return f
    containing = sorted((f for f in files if bare.lower() in f.name.lower()), key=lambda f: len(f.name))
    if containing:
        return containing[0]
    names = ", ".join(f.name for f in files) or f"none in {folder}"
    raise UserError(f"ControlNet model {text!r} not found (available: {names})")


def annotators_dir(controlnet_dir: Path | None) -> Path | None:
    """models/ControlNet-annotators, beside the ControlNet folder."""
    return Path(controlnet_dir).parent / "ControlNet-annotators" if controlnet_dir else None
