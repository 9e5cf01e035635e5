"""Parse LoRA / LyCORIS state dicts into per-module weight deltas (fp32), as A1111's `extensions-builtin/Lora`.

Supported per-module formats (all matched on the part of the key after the module key):
  LoRA / LoCon  `lora_up.weight` + `lora_down.weight` (+ `lora_mid.weight` CP/Tucker, + `alpha`);
                PEFT `lora_B.weight` / `lora_A.weight` are read as up / down.
  LoHa          `hada_w1_a/b`, `hada_w2_a/b` (+ `hada_t1`, `hada_t2`, + `alpha`).
  LoKr          `lokr_w1` or `lokr_w1_a/b`, `lokr_w2` or `lokr_w2_a/b` (+ `lokr_t2`, + `alpha`).
  Full          `diff` (+ `diff_b`).
Scale = alpha / rank (rank = first dimension of the down / `*_b` factor), 1 without alpha; an explicit `scale` key
wins. The delta returned is already multiplied by that scale; the user's multiplier is applied later.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .keys import build_key_map, is_text_target, named_modules


class LoraError(ValueError):
    """A LoRA file that cannot be read or does not fit the loaded model."""


# Longest first, so that e.g. `hada_w1_a` is not taken for a shorter part.
_PART_ALIASES = {
    "lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
    "lora_A.default.weight": "lora_down.weight", "lora_B.default.weight": "lora_up.weight",
    "lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
    "lora_linear_layer.down.weight": "lora_down.weight", "lora_linear_layer.up.weight": "lora_up.weight",
}
_PARTS = sorted({
    "lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "scale", "dora_scale",
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
    "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
    "diff", "diff_b", *_PART_ALIASES,
}, key=len, reverse=True)


def split_key(key: str) -> tuple[str, str]:
    """(module key, part): by known part suffix (works for dotted PEFT names), else at the first '.'."""
    for part in _PARTS:
        if key.endswith("." + part):
            return key[: -len(part) - 1], _PART_ALIASES.get(part, part)
    module, _, part = key.partition(".")
    return module, part


@dataclass
class ModuleDelta:
    """What one LoRA adds to one module, scale included, in fp32 on the CPU."""
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    is_text: bool = False
    kind: str = "lora"


@dataclass
class ParsedLora:
    name: str
    deltas: dict[str, ModuleDelta]            # target ("unet.…" / "text_encoder.…") → delta
    unmatched: list[str] = field(default_factory=list)   # file keys that were not used
    fingerprint: str = ""                     # identity for LoraPatcher's "same set" test

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = self.name


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pt / .ckpt LoRA file; LoraError with the file name when it cannot be read."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LoraError(f"cannot read LoRA file {path.name}: {type(e).__name__}: {e}") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LoraError(f"cannot read LoRA file {path.name}: not a dictionary of tensors")
    return sd


def _f(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float32)


def _conventional(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """up (out, r[,1,1]) @ down (r, in[,kh,kw]) → (out, in·kh·kw)."""
    return up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)


def _cp(mid: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """LoCon CP/Tucker: mid (r, r, kh, kw), up (out, r), down (r, in) → (out, in, kh, kw)."""
    up = up.reshape(up.shape[0], -1)
    down = down.reshape(down.shape[0], -1)
    return torch.einsum("n m k l, i n, m j -> i j k l", mid, up, down)


def _tucker(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """LyCORIS make_weight_cp: t (r, r, kh, kw), wa (r, out), wb (r, in) → (out, in, kh, kw)."""
    temp = torch.einsum("i j k l, j r -> i r k l", t, wb.reshape(wb.shape[0], -1))
    return torch.einsum("i j k l, i r -> r j k l", temp, wa.reshape(wa.shape[0], -1))


def _scale(parts: Mapping[str, torch.Tensor], rank: int | None) -> float:
    if "scale" in parts:
        return float(parts["scale"])
    if "alpha" in parts and rank:
        return float(parts["alpha"]) / rank
    return 1.0


def _fit(delta: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    if delta.shape == shape:
        return delta
    if delta.numel() == shape.numel():
        return delta.reshape(shape)
    raise LoraError(f"{key}: delta of shape {tuple(delta.shape)} does not fit weight {tuple(shape)}")


def compute_delta(key: str, parts: Mapping[str, torch.Tensor], weight_shape: torch.Size,
                  bias_shape: torch.Size | None) -> tuple[ModuleDelta, set[str]]:
    """The scaled delta of one module and the parts it used. LoraError when the parts are not a known format."""
    p = {k: _f(v) for k, v in parts.items()}
    bias = None
    if "lora_up.weight" in p and "lora_down.weight" in p:
        up, down = p["lora_up.weight"], p["lora_down.weight"]
        kind, used = "lora", {"lora_up.weight", "lora_down.weight"}
        if "lora_mid.weight" in p:
            delta = _cp(p["lora_mid.weight"], up, down)
            used.add("lora_mid.weight")
        else:
            delta = _conventional(up, down)
        rank = down.shape[0]
    elif all(k in p for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")):
        kind, used = "loha", {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}
        if "hada_t1" in p and "hada_t2" in p:
            w1 = _tucker(p["hada_t1"], p["hada_w1_a"], p["hada_w1_b"])
            w2 = _tucker(p["hada_t2"], p["hada_w2_a"], p["hada_w2_b"])
            used |= {"hada_t1", "hada_t2"}
        else:
            w1 = _conventional(p["hada_w1_a"], p["hada_w1_b"])
            w2 = _conventional(p["hada_w2_a"], p["hada_w2_b"])
        delta = w1 * w2
        rank = p["hada_w1_b"].shape[0]
    elif ("lokr_w1" in p or ("lokr_w1_a" in p and "lokr_w1_b" in p)) and \
            ("lokr_w2" in p or ("lokr_w2_a" in p and "lokr_w2_b" in p)):
        kind, used, rank = "lokr", set(), None
        if "lokr_w1" in p:
            w1 = p["lokr_w1"]
            used.add("lokr_w1")
        else:
            w1 = _conventional(p["lokr_w1_a"], p["lokr_w1_b"])
            used |= {"lokr_w1_a", "lokr_w1_b"}
            rank = p["lokr_w1_b"].shape[0]
        if "lokr_w2" in p:
            w2 = p["lokr_w2"]
            used.add("lokr_w2")
        else:
            a, b = p["lokr_w2_a"], p["lokr_w2_b"]
            used |= {"lokr_w2_a", "lokr_w2_b"}
            if "lokr_t2" in p:
                w2 = _tucker(p["lokr_t2"], a, b)
                used.add("lokr_t2")
            else:
                w2 = _conventional(a, b).reshape(a.shape[0], *b.shape[1:])
            rank = rank or b.shape[0]
        if len(weight_shape) == 4:
            w1 = w1.reshape(*w1.shape[:2], *([1] * (4 - w1.dim())))
            if w2.dim() == 2:
                w2 = w2.reshape(w2.shape[0], -1, *weight_shape[2:])
        delta = torch.kron(w1.contiguous(), w2.contiguous())
    elif "diff" in p:
        kind, used, rank = "full", {"diff"}, None
        delta = p["diff"]
        if "diff_b" in p:
            bias = p["diff_b"]
            used.add("diff_b")
    else:
        raise LoraError(f"{key}: unknown LoRA format (parts: {', '.join(sorted(p))})")
    scale = _scale(p, rank)
    used |= {"alpha", "scale"} & p.keys()
    delta = _fit(delta, weight_shape, key) * scale
    if bias is not None:
        if bias_shape is None:
            raise LoraError(f"{key}: bias delta for a module without bias")
        bias = _fit(bias, bias_shape, key) * scale
    return ModuleDelta(delta.contiguous(), bias, kind=kind), used


def _examples(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "")


def parse_lora(state_dict: Mapping[str, torch.Tensor], components: Mapping[str, nn.Module | None],
               name: str = "lora", fingerprint: str = "", key_map: Mapping[str, str] | None = None,
               modules: Mapping[str, nn.Module] | None = None) -> ParsedLora:
    """Deltas of `state_dict` for the model `components` ({"unet": …, "text_encoder": …, "text_encoder_2": …}).

    key_map / modules: build_key_map(components) / named_modules(components), pass them to reuse across files.
    Keys whose module is not in the model, or whose shapes do not fit, are listed in `unmatched`.
    Raises LoraError when nothing at all matches (wrong architecture / not a LoRA).
    """
    modules = named_modules(components) if modules is None else modules
    key_map = build_key_map(components) if key_map is None else key_map
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unmatched: list[str] = []
    for key, tensor in state_dict.items():
        module_key, part = split_key(key)
        if module_key in key_map and key_map[module_key] in modules:
            grouped.setdefault(module_key, {})[part] = tensor
        else:
            unmatched.append(key)
    deltas: dict[str, ModuleDelta] = {}
    for module_key, parts in grouped.items():
        target = key_map[module_key]
        module = modules[target]
        bias = getattr(module, "bias", None)
        try:
            delta, used = compute_delta(module_key, parts, module.weight.shape,
                                        None if bias is None else bias.shape)
        except (LoraError, RuntimeError):
            unmatched.extend(f"{module_key}.{part}" for part in parts)
            continue
        unmatched.extend(f"{module_key}.{part}" for part in parts if part not in used)
        delta.is_text = is_text_target(target)
        if target in deltas:  # two spellings of one module in one file: add them
            prev = deltas[target]
            prev.weight = prev.weight + delta.weight
            if delta.bias is not None:
                prev.bias = delta.bias if prev.bias is None else prev.bias + delta.bias
        else:
            deltas[target] = delta
    if not deltas:
        keys = sorted(state_dict)
        raise LoraError(f"LoRA {name!r} does not fit the loaded model: none of its {len(keys)} keys matched a "
                        f"module (wrong architecture?); e.g. {_examples(keys)}")
    return ParsedLora(name, deltas, sorted(unmatched), fingerprint or name)


def load_lora(path: str | os.PathLike, components: Mapping[str, nn.Module | None],
              key_map: Mapping[str, str] | None = None, modules: Mapping[str, nn.Module] | None = None) -> ParsedLora:
    """load_state_dict + parse_lora; the fingerprint is path + mtime + size (a changed file re-merges)."""
    path = Path(path)
    state_dict = load_state_dict(path)
    st = path.stat()
    fp = hashlib.sha1(f"{path.resolve()}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()
    return parse_lora(state_dict, components, path.stem, fp, key_map, modules)
