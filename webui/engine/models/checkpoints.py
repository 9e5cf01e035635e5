"""Find checkpoint files, hash them as A1111 does, and read them safely into a state dict."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


class CheckpointError(UserError):
    """A checkpoint cannot be found or read; the message says which file and why."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    name: str  # path relative to the checkpoint folder, with suffix: A1111's "name"

    @property
    def model_name(self) -> str:
        """What infotext writes as `Model:`: the name without suffix, folders joined by "_" as A1111."""
        return os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]

    @classmethod
    def from_path(cls, path: Path, root: Path | None = None) -> CheckpointInfo:
        path = Path(path).resolve()
        try:
            name = path.relative_to(root.resolve()).as_posix() if root else path.name
        except ValueError:
            name = path.name
        return cls(path=path, name=name)


def list_checkpoints(ckpt_dir: Path) -> list[CheckpointInfo]:
    """Every checkpoint under ckpt_dir (recursive), sorted by name."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    folders = [p.parent for p in ckpt_dir.rglob("model_index.json")]  # diffusers-format models
    found = [
        CheckpointInfo.from_path(p, ckpt_dir)
        for p in ckpt_dir.rglob("*")
        if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file() and not any(f in p.parents for f in folders)
    ] + [CheckpointInfo.from_path(f, ckpt_dir) for f in folders]
    return sorted(found, key=lambda c: c.name.lower())


def resolve_checkpoint(query: str, ckpt_dir: Path, hashes: HashCache | None = None) -> CheckpointInfo:
    """A path, or a name / model name / title / short hash of a file in ckpt_dir."""
    path = Path(query).expanduser()
    if path.is_file() or (path / "model_index.json").is_file():
        return CheckpointInfo.from_path(path, ckpt_dir)
    candidates = list_checkpoints(ckpt_dir)
    bare = query.split(" [")[0]  # a dropdown title "name [hash]"
    for info in candidates:
        if bare in (info.name, info.model_name, Path(info.name).name, Path(info.name).stem):
            return info
    if hashes is not None and len(query) >= 8:
        for info in candidates:
            cached = hashes.cached(info.path)
            if cached and cached.startswith(query.lower()):
                return info
    known = ", ".join(c.name for c in candidates) or f"none: put .safetensors or .ckpt files in {ckpt_dir}"
    raise CheckpointError(f"checkpoint not found: {query!r} (known checkpoints: {known})")


def native_size(path: Path) -> tuple[int, int] | None:
    """(width, height) a .safetensors checkpoint says it was trained at (`modelspec.resolution`, Stability's
    model-spec header key, e.g. "1024x1024"), or None where it does not say or says nonsense. Reads the header only."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= 100_000_000:
                return None
            metadata = json.loads(f.read(size)).get("__metadata__") or {}
        width, height = (int(n) for n in str(metadata.get("modelspec.resolution", "")).lower().split("x"))
    except (OSError, ValueError, AttributeError):
        return None
    from ..params import SIZE_MAX, SIZE_MIN
    if not all(SIZE_MIN <= n <= SIZE_MAX and n % 8 == 0 for n in (width, height)):
        return None
    return width, height


def read_state_dict(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .ckpt file; a .ckpt is unpickled with weights_only, never running code.
    `dtype`: the precision the model will run in; a .safetensors file stored in another one is read tensor by
    tensor and cast as it is read (models/streamed.py: the peak stays near the loaded model's size), otherwise
    its tensors are used in place. The VAE's tensors are kept as stored: they are checked for NaN/inf as the
    file has them, and cast once, to the VAE's own precision, when it is built."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from . import streamed

        def target(name: str):
            return None if name.startswith(VAE_PREFIX) else dtype

        try:
            if dtype is not None and streamed.needs_cast(path, target):
                return streamed.read(path, target)
        except (streamed.FormatError, OSError):
            pass  # safetensors' own reader says what is wrong with the file, below
        try:
            state_dict = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {path.name}: not a valid .safetensors file ({e})") from e
    elif suffix == ".ckpt":
        try:
            state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"refused to load {path.name}: it contains Python objects other than tensors, and unpickling "
                f"them could run code. Use a .safetensors version of this model."
            ) from e
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"cannot read {path.name}: not a valid .ckpt file ({e})") from e
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
            state_dict = state_dict["state_dict"]
    else:
        raise CheckpointError(f"cannot read {path.name}: expected .safetensors or .ckpt")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"cannot read {path.name}: it holds no state dict")
    return {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def non_finite_key(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first floating-point tensor holding NaN or infinity, or None. Every file of weights (checkpoint VAE,
    VAE, LoRA) is checked here: one such value, once used, turns every picture black, and a refusal that names
    the file and tensor is the only way a user can tell."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return key
    return None


VAE_PREFIX = "first_stage_model."  # the VAE's tensors in a single-file checkpoint (SD1, SD2, SDXL)


def check_vae_finite(state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """CheckpointError when the checkpoint's VAE holds NaN or infinity. Only the VAE is checked: it is a small
    part of the file (~160 MB of 2-7 GB), and a broken one is the common cause of all-black pictures."""
    key = non_finite_key({k: v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)})
    if key is not None:
        raise CheckpointError(f"checkpoint {name} is broken: its VAE tensor {key} contains NaN or infinite values")


def file_sha256(path: Path, start: int = 0) -> str:
    """sha256 of a file's bytes from `start` on, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class HashCache:
    """sha256 of whole files, cached on disk by path, size and mtime (A1111's cache.json idea)."""

    def __init__(self, cache_file: Path):
        self.cache_file = Path(cache_file)
        self._lock = threading.Lock()
        try:
            self._entries = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            self._entries = {}

    @staticmethod
    def _stamp(path: Path) -> list:
        st = path.stat()
        return [st.st_size, st.st_mtime]

    def cached(self, path: Path, kind: str = "sha256") -> str | None:
        path = Path(path).resolve()
        entry = self._entries.get(str(path))
        try:
            if entry and entry["stamp"] == self._stamp(path):
                return entry.get(kind)
        except OSError:
            pass
        return None

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        if path.is_dir():  # a diffusers folder: its UNet weights identify it
            path = min(path.glob("unet/*.safetensors"), default=path / "model_index.json")
        return self.digest(path, "sha256", file_sha256)

    def digest(self, path: Path, kind: str, compute) -> str:
        """compute(path) → hex digest, cached under `kind` beside the file's other digests."""
        path = Path(path).resolve()
        if found := self.cached(path, kind):
            return found
        value = compute(path)
        with self._lock:
            entry = self._entries.get(str(path))
            stamp = self._stamp(path)
            if not entry or entry.get("stamp") != stamp:
                entry = self._entries[str(path)] = {"stamp": stamp}
            entry[kind] = value
            self._save()
        return value

    def _save(self):
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._entries, indent=1))
            os.replace(tmp, self.cache_file)
        except OSError:
            pass  # a read-only data dir only costs re-hashing


def short_hash(sha256: str) -> str:
    """A1111's "Model hash": the first 10 hex digits of the file's sha256."""
    return sha256[:10]
