"""Textual-inversion embeddings as A1111 finds, reads and matches them (modules/textual_inversion).

Every .pt / .bin / .safetensors file under the embeddings folder is read without running code (.pt/.bin through
`torch.load(weights_only=True)`). An embedding is named after its file stem (a diffusers `learned_embeds.*` file
after its folder). It is registered under the token ids of that name, and the prompt encoder finds it by token
sequence, longest name first, as A1111 does. Embeddings whose width differs from the text encoder's, and files
that cannot be read, are listed in `skipped` with the reason. A bad file is never fatal.

SDXL embeddings ({clip_l, clip_g}) take A1111's combined width (768 + 1280 = 2048): their `vectors` are
[clip_l | clip_g] along the last axis, and `parts` holds each on its own."""
from __future__ import annotations

import logging
import os
import pickletools
import re
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.checkpoints import HashCache, file_sha256
from ..errors import UserError

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
DIFFUSERS_STEM = "learned_embeds"  # diffusers' textual_inversion script writes <concept>/learned_embeds.{bin,safetensors}
MAX_VECTORS = 75  # one prompt chunk: a longer embedding could never be placed
MAX_FILE_BYTES = 32 << 20  # embeddings are KBs; anything this big is a LoRA or a checkpoint put in the wrong folder
TI_HASH_LENGTH = 12  # A1111's "TI hashes": the first 12 hex digits of the file's sha256


class EmbeddingError(UserError):
    """An embedding file cannot be read; the message names the file and says why."""


@dataclass(eq=False)
class Embedding:
    name: str
    vectors: torch.Tensor = field(repr=False)  # (n, width) float32 on the CPU
    path: Path
    sha256: str | None = None  # of the whole file, filled on first use of `hash`
    step: int | None = None  # training step, from A1111's metadata
    checkpoint_name: str | None = None  # A1111's sd_checkpoint_name: the model it was trained on
    parts: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # SDXL: {"clip_l": (n, 768), "clip_g": (n, 1280)}
    hash_cache: HashCache | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        return self.vectors.shape[-1]

    @property
    def count(self) -> int:
        """How many prompt tokens the embedding takes."""
        return self.vectors.shape[0]

    @property
    def hash(self) -> str:
        """A1111's TI hash: the first 12 hex digits of the file's sha256 ("" if the file is gone)."""
        if self.sha256 is None:
            try:
                self.sha256 = self.hash_cache.sha256(self.path) if self.hash_cache else file_sha256(self.path)
            except OSError as e:
                log.warning("cannot hash embedding %s: %s", self.path, e)
                return ""
        return self.sha256[:TI_HASH_LENGTH]


# ---------------------------------------------------------------------------------------------------- reading


def _short(e: BaseException, limit: int = 200) -> str:
    """The telling part of an exception's message (torch's unpickling errors are paragraphs long)."""
    text = str(e).strip()
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    text = (found.group(1) if found else text).strip()
    text = f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _pickle_globals(path: Path, error: BaseException) -> list[str]:
    """Names of the Python objects a refused pickle would import, found without unpickling it."""
    names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if names:
        return names
    try:
        if zipfile.is_zipfile(path):
            from torch.serialization import get_unsafe_globals_in_checkpoint

            return [n for n in get_unsafe_globals_in_checkpoint(str(path)) if n != "torch.nn.modules.container.ParameterDict"]
        # a plain pickle (not written by torch.save): read its opcodes, never executing them
        names, strings = [], []
        with open(path, "rb") as f:
            for opcode, arg, _ in pickletools.genops(f):
                if opcode.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        return names
    except Exception:  # noqa: BLE001 - not a pickle at all: the caller reports the file as unreadable
        return []


def _torch_load(path: Path):
    """torch.load that only builds tensors and plain containers. The original textual_inversion repo saved
    string_to_param as an nn.ParameterDict, whose state is plain data, so that one class is allowed too."""
    from torch.serialization import safe_globals

    try:
        with safe_globals([torch.nn.ParameterDict]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        names = _pickle_globals(path, e)
        if names:
            raise EmbeddingError(
                f"refused to load embedding {path.name}: it contains Python objects other than tensors "
                f"({', '.join(sorted(set(names)))}), and unpickling them could run code") from e
        raise EmbeddingError(f"cannot read embedding {path.name}: not a valid PyTorch file ({_short(e)})") from e


def _load_data(path: Path):
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise EmbeddingError(f"cannot read embedding {path.name}: not a valid .safetensors file "
                                 f"({_short(e)})") from e
    if suffix in (".pt", ".bin"):
        return _torch_load(path)
    raise EmbeddingError(f"cannot read embedding {path.name}: expected .pt, .bin or .safetensors")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)}"
    return type(value).__name__


def _matrix(tensor: torch.Tensor, path: Path, what: str) -> torch.Tensor:
    """(n, width) float32: a 1-D vector becomes one row."""
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2 or tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise EmbeddingError(f"cannot read embedding {path.name}: {what} is a tensor of shape {tuple(tensor.shape)}, "
                             f"expected (vectors, width)")
    return tensor.detach().to("cpu", torch.float32).contiguous()


def _parse(data, path: Path) -> tuple[torch.Tensor | dict[str, torch.Tensor], dict]:
    """The vectors of a loaded file (or SDXL's {clip_l, clip_g}) and its A1111 metadata."""
    if not isinstance(data, Mapping):
        raise EmbeddingError(f"cannot read embedding {path.name}: it holds a {_describe(data)}, "
                             f"not a dict of tensors")
    meta = {}
    if isinstance(data.get("step"), int) and not isinstance(data.get("step"), bool):
        meta["step"] = data["step"]
    if isinstance(data.get("sd_checkpoint_name"), str):
        meta["checkpoint_name"] = data["sd_checkpoint_name"]

    if "string_to_param" in data:  # A1111 and the original textual_inversion repo
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # an nn.ParameterDict
        if not isinstance(params, Mapping):
            raise EmbeddingError(f"cannot read embedding {path.name}: string_to_param is a {_describe(params)}")
        tensors = [v for v in params.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise EmbeddingError(f"cannot read embedding {path.name}: string_to_param holds {len(tensors)} "
                                 f"tensors, expected one term")
        return _matrix(tensors[0], path, "string_to_param"), meta

    if isinstance(data.get("clip_l"), torch.Tensor) and isinstance(data.get("clip_g"), torch.Tensor):  # SDXL
        parts = {k: _matrix(data[k], path, k) for k in ("clip_l", "clip_g")}
        if parts["clip_l"].shape[0] != parts["clip_g"].shape[0]:
            raise EmbeddingError(f"cannot read embedding {path.name}: clip_l has {parts['clip_l'].shape[0]} "
                                 f"vectors but clip_g has {parts['clip_g'].shape[0]}")
        return parts, meta

    # a diffusers concept ({"<token>": vector}) or kohya's {"emb_params": vectors}: one tensor
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:
        key, tensor = next(iter(tensors.items()))
        return _matrix(tensor, path, repr(key)), meta
    found = ", ".join(f"{k!r}: {_describe(v)}" for k, v in list(data.items())[:8])
    if len(data) > 8:
        found += f", … ({len(data)} entries)"
    raise EmbeddingError(f"cannot read embedding {path.name}: not a textual-inversion embedding "
                         f"(expected string_to_param, clip_l/clip_g or a single tensor; found {found or 'an empty dict'})")


def _select(vectors: torch.Tensor | dict[str, torch.Tensor], width: int | None) -> torch.Tensor:
    """SDXL parts: the one of the requested width, else both side by side ([clip_l | clip_g], A1111's shape)."""
    if isinstance(vectors, torch.Tensor):
        return vectors
    for part in vectors.values():
        if width is not None and part.shape[-1] == width:
            return part
    return torch.cat([vectors["clip_l"], vectors["clip_g"]], dim=-1)


def read_embedding_file(path: Path, width: int | None = None) -> torch.Tensor:
    """The (n, width) float32 vectors of an embedding file, in any format A1111 reads:

    - A1111 / textual_inversion `.pt`/`.bin`: {"string_to_param": {"*": (n, width)}, "name", "step", …}
    - kohya `.safetensors`: {"emb_params": (n, width)}
    - diffusers `learned_embeds.bin`/`.safetensors`: {"<token>": (width,) or (n, width)}
    - SDXL: {"clip_l": (n, 768), "clip_g": (n, 1280)}: the part whose width is `width`, else [clip_l | clip_g]

    Pickles are loaded with weights_only: one that references code raises EmbeddingError without running it."""
    path = Path(path)
    vectors, _ = _parse(_load_data(path), path)
    return _select(vectors, width)


# ---------------------------------------------------------------------------------------------------- database


def embedding_name(path: Path, root: Path) -> str:
    """A1111's name: the file stem; a diffusers learned_embeds file is named after its folder."""
    path = Path(path)
    if path.stem == DIFFUSERS_STEM and path.parent != Path(root):
        return path.parent.name
    return path.stem


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


class EmbeddingDatabase:
    """The embeddings of one folder (searched recursively) for the loaded text encoder."""

    def __init__(self, folder: Path, hashes: HashCache | None = None):
        self.folder = Path(folder)
        self.hashes = hashes
        self.loaded: dict[str, Embedding] = {}
        self.skipped: dict[str, Embedding | str] = {}  # wrong width → the Embedding; unreadable → the reason
        self._ids_lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        self._tokenizer = None
        self._width: int | None = None
        self._fingerprint: tuple | None = None
        self._lock = threading.RLock()

    # -------------------------------------------------------------- scanning

    def files(self) -> list[Path]:
        """Candidate files, sorted by relative path; dotfiles and dot-folders are left out."""
        if not self.folder.is_dir():
            return []
        found, seen_dirs = [], set()
        for root, dirs, names in os.walk(self.folder, followlinks=True):
            real = os.path.realpath(root)
            if real in seen_dirs:  # a symlink loop
                dirs[:] = []
                continue
            seen_dirs.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in names:
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in EMBEDDING_SUFFIXES:
                    found.append(Path(root) / name)
        return sorted(found, key=lambda p: p.relative_to(self.folder).as_posix().lower())

    def _fingerprint_now(self) -> tuple:
        """Sizes and mtimes of the candidate files and of the folders: what changes when an embedding does."""
        stamps = []
        if self.folder.is_dir():
            for root, dirs, _ in os.walk(self.folder, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                try:
                    stamps.append((root, os.stat(root).st_mtime_ns))
                except OSError:
                    pass
        for path in self.files():
            try:
                st = path.stat()
                stamps.append((str(path), st.st_size, st.st_mtime_ns))
            except OSError:
                pass
        return tuple(stamps)

    def _read(self, path: Path) -> Embedding:
        """An Embedding, or EmbeddingError saying why the file cannot be used at all."""
        size = path.stat().st_size
        if size == 0:
            raise EmbeddingError(f"cannot read embedding {path.name}: the file is empty")
        if size > MAX_FILE_BYTES:
            raise EmbeddingError(f"cannot read embedding {path.name}: {size / 2**20:.0f} MB is too large for an "
                                 f"embedding (is it a LoRA or a checkpoint?)")
        vectors, meta = _parse(_load_data(path), path)
        parts = vectors if isinstance(vectors, dict) else None
        # A1111 compares the embedding's full width (SDXL: clip_l + clip_g) with the model's
        matrix = torch.cat([parts["clip_l"], parts["clip_g"]], dim=-1) if parts else vectors
        if not torch.isfinite(matrix).all():
            raise EmbeddingError(f"cannot use embedding {path.name}: its vectors contain NaN or infinity")
        if matrix.shape[0] > MAX_VECTORS:
            raise EmbeddingError(f"cannot use embedding {path.name}: it has {matrix.shape[0]} vectors, "
                                 f"more than a prompt chunk holds ({MAX_VECTORS})")
        return Embedding(name=embedding_name(path, self.folder), vectors=matrix, path=path,
                         step=meta.get("step"), checkpoint_name=meta.get("checkpoint_name"),
                         parts=parts, hash_cache=self.hashes)

    def load(self, tokenizer, width: int) -> None:
        """(Re)read every embedding for a text encoder of this width (SDXL: 2048, clip_l + clip_g) and register
        the usable ones under their names' token ids. Bad files are listed in `skipped`, never raised."""
        with self._lock:
            fingerprint = self._fingerprint_now()
            loaded: dict[str, Embedding] = {}
            skipped: dict[str, Embedding | str] = {}
            lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
            owners: dict[tuple[int, ...], str] = {}

            def skip(name: str, path: Path, what):
                key = name if name not in loaded and name not in skipped else \
                    f"{name} ({path.relative_to(self.folder).as_posix()})"
                skipped[key] = what

            for path in self.files():
                name = embedding_name(path, self.folder)
                try:
                    embedding = self._read(path)
                except Exception as e:  # noqa: BLE001 - whatever a broken file does, the folder still loads
                    reason = str(e) if isinstance(e, EmbeddingError) else \
                        f"cannot read embedding {path.name}: {_short(e)}"
                    # a warning, not info: a refused pickle may be an attack, and a broken file the reason
                    # a prompt's embedding name has no effect
                    log.warning("%s (%s skipped)", reason, path)
                    skip(name, path, reason)
                    continue
                if embedding.width != width:
                    skip(name, path, embedding)
                    continue
                if name in loaded:
                    skip(name, path, f"another embedding named {name!r} is already loaded from "
                                     f"{loaded[name].path.relative_to(self.folder).as_posix()}")
                    continue
                ids = list(tokenizer(name, add_special_tokens=False).input_ids)
                if not ids:
                    skip(name, path, f"the name {name!r} has no tokens, so a prompt cannot refer to it")
                    continue
                if tuple(ids) in owners:  # e.g. "Style" and "style": the tokenizer lowercases
                    skip(name, path, f"{name!r} is the same tokens as the embedding {owners[tuple(ids)]!r}")
                    continue
                owners[tuple(ids)] = name
                loaded[name] = embedding
                lookup.setdefault(ids[0], []).append((ids, embedding))
            for candidates in lookup.values():
                candidates.sort(key=lambda entry: len(entry[0]), reverse=True)  # longest name wins

            self.loaded = dict(sorted(loaded.items(), key=lambda item: item[0].lower()))
            self.skipped = skipped
            self._ids_lookup = lookup
            self._tokenizer, self._width, self._fingerprint = tokenizer, width, fingerprint
        if loaded or skipped:
            log.info("Textual inversion embeddings loaded(%d): %s", len(loaded), ", ".join(self.loaded))
        if skipped:
            log.info("Textual inversion embeddings skipped(%d): %s", len(skipped), ", ".join(skipped))

    def reload_if_changed(self, tokenizer=None, width: int | None = None) -> bool:
        """Re-scan when a file or folder changed since the last load (or the tokenizer/width differ).
        Without arguments the last load's tokenizer and width are used. True if it reloaded."""
        with self._lock:
            tokenizer = tokenizer if tokenizer is not None else self._tokenizer
            width = width if width is not None else self._width
            if tokenizer is None or width is None:
                return False
            if (tokenizer is self._tokenizer and width == self._width
                    and self._fingerprint == self._fingerprint_now()):
                return False
            self.load(tokenizer, width)
            return True

    # -------------------------------------------------------------- lookups

    def find_embedding_at_position(self, tokens: list[int], offset: int) -> tuple[Embedding | None, int | None]:
        """The embedding whose name's token ids start at tokens[offset] (the longest such name) and how many
        prompt tokens that name spans; (None, None) if none does."""
        if not 0 <= offset < len(tokens):
            return None, None
        for ids, embedding in self._ids_lookup.get(tokens[offset], ()):
            if list(tokens[offset:offset + len(ids)]) == ids:
                return embedding, len(ids)
        return None, None

    def get(self, name: str) -> Embedding | None:
        return self.loaded.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.loaded

    def __len__(self) -> int:
        return len(self.loaded)
