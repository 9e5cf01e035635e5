"""Reading a .safetensors checkpoint tensor by tensor, each cast to the precision it will run in as it is read.

safetensors' own loader maps the file and hands out tensors that live in the mapping: ideal when the weights are
used as stored (fp16 files in fp16). When they must be cast (an fp16 file run in fp32 on a CPU), the mapping's
pages stay resident beside the cast copies until the whole model is built — about 3× the file at the peak. Here
each tensor's bytes are read with a plain file read into a buffer of their own, cast, and the buffer dropped, so the
peak is the loaded model plus one tensor (the page cache keeps the file, outside the process).

The format (8-byte little-endian header length, a JSON header of {name: {dtype, shape, data_offsets}}, then the
data) is checked as it is read: offsets inside the data, sizes that match the shapes."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Callable

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class FormatError(ValueError):
    pass


def header(path: Path) -> tuple[dict, int]:
    """({name: entry}, where the data starts); FormatError for anything that is not a readable safetensors
    header (or holds a dtype this reader does not know: the caller then uses safetensors' own loader)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise FormatError("file too short")
        (length,) = struct.unpack("<Q", raw)
        if length > HEADER_LIMIT:
            raise FormatError("header too large")
        text = f.read(length)
    try:
        entries = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"header is not JSON ({e})") from None
    if not isinstance(entries, dict):
        raise FormatError("header is not a JSON object")
    entries.pop("__metadata__", None)
    data_size = Path(path).stat().st_size - 8 - length
    for name, entry in entries.items():
        try:
            dtype, shape, (begin, end) = DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"tensor {name!r}: unknown dtype or malformed entry") from None
        want = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if not (0 <= begin <= end <= data_size) or end - begin != want:
            raise FormatError(f"tensor {name!r}: data offsets do not match its shape")
    return entries, 8 + length


def read(path: Path, target: Callable[[str], torch.dtype | None]) -> dict[str, torch.Tensor]:
    """Every tensor of `path`; floating-point ones cast to `target(name)` (None: kept as stored)."""
    entries, start = header(path)
    out = {}
    with open(path, "rb", buffering=0) as f:
        for name, entry in sorted(entries.items(), key=lambda item: item[1]["data_offsets"][0]):
            begin, end = entry["data_offsets"]
            buffer = bytearray(end - begin)
            f.seek(start + begin)
            if f.readinto(buffer) != len(buffer):
                raise FormatError(f"tensor {name!r}: file ends inside its data")
            dtype = DTYPES[entry["dtype"]]
            tensor = (torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype))
            tensor = tensor.reshape(entry["shape"])
            wanted = target(name) if dtype.is_floating_point else None
            # a cast makes its own copy; a kept tensor keeps its buffer (one reference, nothing shared)
            out[name] = tensor.to(wanted) if wanted is not None and wanted != dtype else tensor
    return out


def needs_cast(path: Path, target: Callable[[str], torch.dtype | None]) -> bool:
    """Whether some floating-point tensor of `path` is stored in another precision than it will run in."""
    entries, _ = header(path)
    for name, entry in entries.items():
        dtype = DTYPES[entry["dtype"]]
        wanted = target(name)
        if dtype.is_floating_point and wanted is not None and wanted != dtype:
            return True
    return False
