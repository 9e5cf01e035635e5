"""Parse LoRA / LyCORIS state dicts into per-module weight deltas (fp32), as A1111's `extensions-builtin/Lora`.

Supported per-module formats (all matched on the part of the key after the module key):
  LoRA / LoCon  `lora_up.weight` + `lora_down.weight` (+ `lora_mid.weight` CP/Tucker, + `alpha`);
                PEFT `lora_B.weight` / `lora_A.weight` are read as up / down.
  LoHa          `hada_w1_a/b`, `hada_w2_a/b` (+ `hada_t1`, `hada_t2`, + `alpha`).
  LoKr          `lokr_w1` or `lokr_w1_a/b`, `lokr_w2` or `lokr_w2_a/b` (+ `lokr_t2`, + `alpha`).
  Full          `diff` (+ `diff_b`).
  Norm          `w_norm` (+ `b_norm`) on LayerNorm / GroupNorm.
  (IA)³         `weight` (+ `on_input`): Δ = W · w per output (or input) channel.
  any of them   + `dora_scale` (DoRA: the merged weight rescaled to learnt magnitudes).
Scale = alpha / rank (rank = first dimension of the down / `*_b` factor), 1 without alpha; an explicit `scale` key
wins. Deltas are kept as the file's factors and computed in fp32 when merged (see ModuleDelta.compute).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..models.checkpoints import non_finite_key
from .keys import build_key_map, is_text_target, named_modules


class LoraError(UserError, ValueError):
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
    "diff", "diff_b", "w_norm", "b_norm", "on_input", *_PART_ALIASES,
}, key=len, reverse=True)


def split_key(key: str) -> tuple[str, str]:
    """(module key, part): by known part suffix (works for dotted PEFT names), else at the first '.'."""
    for part in _PARTS:
        if key.endswith("." + part):
            return key[: -len(part) - 1], _PART_ALIASES.get(part, part)
    module, _, part = key.partition(".")
    return module, part


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pt / .ckpt LoRA file; LoraError with the file name when it cannot be read."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # no Python object refused: not a pickle of tensors at all
            raise LoraError(f"cannot read LoRA file {path.name}: not a LoRA file (unreadable pickle)") from e
        # torch's own message is a paragraph (with terminal colour codes) advising weights_only=False
        raise LoraError(f"refused to load LoRA file {path.name}: it contains Python objects other than tensors, "
                        "and unpickling them could run code. Use a .safetensors version of it.") from e
    except Exception as e:
        raise LoraError(f"cannot read LoRA file {path.name}: {type(e).__name__}: {e}") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LoraError(f"cannot read LoRA file {path.name}: not a dictionary of tensors")
    bad = non_finite_key(sd)  # merged, a single NaN would turn every picture black
    if bad is not None:
        raise LoraError(f"LoRA file {path.name} is broken: {bad} contains NaN or infinite values")
    return sd


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


_SCALARS = ("alpha", "scale", "on_input")  # read on the CPU as numbers, never moved to the device


def _scale(parts: Mapping[str, torch.Tensor], rank: int | None) -> float:
    if "scale" in parts:
        return float(parts["scale"])
    if "alpha" in parts and rank:
        return float(parts["alpha"]) / rank
    return 1.0


def _fit(delta: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    if delta.shape == shape:
        return delta
    if len(shape) == 4 and shape[1] == 9 and delta.numel() == shape[0] * 4 * shape[2] * shape[3]:
        # an SD LoRA on an inpainting UNet's conv_in: no change for the mask and masked-image channels (A1111)
        delta = delta.reshape(shape[0], 4, *shape[2:])
        return torch.nn.functional.pad(delta, (0, 0, 0, 0, 0, 5))
    if delta.numel() == shape.numel():
        return delta.reshape(shape)
    raise LoraError(f"{key}: delta of shape {tuple(delta.shape)} does not fit weight {tuple(shape)}")


def kind_of(parts: Mapping[str, torch.Tensor]) -> tuple[str, set[str]]:
    """The module format and the parts it reads; LoraError for an unknown set of parts."""
    if "lora_up.weight" in parts and "lora_down.weight" in parts:
        return "lora", {"lora_up.weight", "lora_down.weight", "lora_mid.weight"} & parts.keys()
    if all(k in parts for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")):
        used = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}
        if "hada_t1" in parts and "hada_t2" in parts:
            used |= {"hada_t1", "hada_t2"}
        return "loha", used
    has_w1 = "lokr_w1" in parts or ("lokr_w1_a" in parts and "lokr_w1_b" in parts)
    has_w2 = "lokr_w2" in parts or ("lokr_w2_a" in parts and "lokr_w2_b" in parts)
    if has_w1 and has_w2:
        names = {"lokr_w1"} if "lokr_w1" in parts else {"lokr_w1_a", "lokr_w1_b"}
        names |= {"lokr_w2"} if "lokr_w2" in parts else {"lokr_w2_a", "lokr_w2_b"} | ({"lokr_t2"} & parts.keys())
        return "lokr", names
    if "diff" in parts:
        return "full", {"diff"} | ({"diff_b"} & parts.keys())
    if "w_norm" in parts:
        return "norm", {"w_norm"} | ({"b_norm"} & parts.keys())
    if "weight" in parts:
        return "ia3", {"weight"} | ({"on_input"} & parts.keys())
    raise LoraError(f"unknown LoRA format (parts: {', '.join(sorted(parts))})")


def _raw_delta(kind: str, p: Mapping[str, torch.Tensor], raw: Mapping[str, torch.Tensor],
               orig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """(weight delta before scale, bias delta, rank for alpha/rank) of one format; `p` are fp32 on orig's device."""
    if kind == "lora":
        up, down = p["lora_up.weight"], p["lora_down.weight"]
        delta = _cp(p["lora_mid.weight"], up, down) if "lora_mid.weight" in p else _conventional(up, down)
        return delta, None, down.shape[0]
    if kind == "loha":
        if "hada_t1" in p and "hada_t2" in p:
            w1 = _tucker(p["hada_t1"], p["hada_w1_a"], p["hada_w1_b"])
            w2 = _tucker(p["hada_t2"], p["hada_w2_a"], p["hada_w2_b"])
        else:
            w1 = _conventional(p["hada_w1_a"], p["hada_w1_b"])
            w2 = _conventional(p["hada_w2_a"], p["hada_w2_b"])
        return w1 * w2, None, p["hada_w1_b"].shape[0]
    if kind == "lokr":
        rank = None
        if "lokr_w1" in p:
            w1 = p["lokr_w1"]
        else:
            w1 = _conventional(p["lokr_w1_a"], p["lokr_w1_b"])
            rank = p["lokr_w1_b"].shape[0]
        if "lokr_w2" in p:
            w2 = p["lokr_w2"]
        else:
            a, b = p["lokr_w2_a"], p["lokr_w2_b"]
            w2 = _tucker(p["lokr_t2"], a, b) if "lokr_t2" in p else \
                _conventional(a, b).reshape(a.shape[0], *b.shape[1:])
            rank = rank or b.shape[0]
        if orig.dim() == 4:
            w1 = w1.reshape(*w1.shape[:2], *([1] * (4 - w1.dim())))
            if w2.dim() == 2:
                w2 = w2.reshape(w2.shape[0], -1, *orig.shape[2:])
        return torch.kron(w1.contiguous(), w2.contiguous()), None, rank
    if kind == "full":
        return p["diff"], p.get("diff_b"), None
    if kind == "norm":
        return p["w_norm"], p.get("b_norm"), None
    if kind == "ia3":  # a learnt per-channel factor on the weight itself: Δ = W · w
        w = p["weight"]
        on_input = "on_input" in raw and bool(raw["on_input"])
        w = w.reshape(1, -1, *[1] * (orig.dim() - 2)) if on_input else w.reshape(-1, *[1] * (orig.dim() - 1))
        return orig * w, None, None
    raise LoraError(f"unknown LoRA format {kind}")


def _dora(delta: torch.Tensor, orig: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA: W' = (W + ΔW) rescaled to the learnt magnitudes; returns W' − W.

    kohya/A1111 files store one magnitude per input column, shape (1, in, …); LyCORIS/PEFT ones one per output
    row, shape (out, 1, …) or (out,). The shape tells which.
    """
    merged = orig + delta
    out_ch, in_ch = merged.shape[0], merged.shape[1]
    per_input = magnitude.dim() >= 2 and magnitude.shape[0] == 1 and magnitude.shape[1] == in_ch
    if not per_input and magnitude.numel() == out_ch:
        norm = merged.reshape(out_ch, -1).norm(dim=1).reshape(out_ch, *[1] * (merged.dim() - 1))
    else:
        norm = merged.transpose(0, 1).reshape(in_ch, -1).norm(dim=1).reshape(1, in_ch, *[1] * (merged.dim() - 2))
    return merged * (magnitude.reshape(norm.shape) / norm) - orig


def compute_delta(key: str, kind: str, parts: Mapping[str, torch.Tensor], orig_weight: torch.Tensor,
                  bias_shape: torch.Size | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 (Δweight, Δbias) of one module at multiplier 1, on orig_weight's device (which may be "meta" to
    check shapes only). orig_weight is the module's fp32 original: (IA)³ and DoRA are relative to it.
    A1111's order: Δ·scale, then DoRA, then the user's multiplier (applied by the caller); the bias delta is
    not scaled."""
    device = orig_weight.device
    p = {k: v.to(device=device, dtype=torch.float32) for k, v in parts.items() if k not in _SCALARS}
    delta, bias, rank = _raw_delta(kind, p, parts, orig_weight)
    delta = _fit(delta, orig_weight.shape, key) * _scale(parts, rank)
    if "dora_scale" in p:
        delta = _dora(delta, orig_weight, p["dora_scale"])
    if bias is not None:
        if bias_shape is None:
            raise LoraError(f"{key}: bias delta for a module without bias")
        bias = _fit(bias, bias_shape, key)
    return delta, bias


@dataclass
class ModuleDelta:
    """One LoRA's change to one module, kept as the file's (small) factors; computed when merged, on the
    weight's device, so a cached LoRA costs its file size in RAM, not the model's."""
    key: str
    kind: str
    parts: dict[str, torch.Tensor]
    is_text: bool = False

    @property
    def has_bias(self) -> bool:
        return any(k in self.parts for k in ("diff_b", "b_norm"))

    def compute(self, orig_weight: torch.Tensor, bias_shape: torch.Size | None = None):
        """(Δweight, Δbias or None) in fp32 at multiplier 1; orig_weight is the module's original weight."""
        return compute_delta(self.key, self.kind, self.parts, orig_weight.float(), bias_shape)

    def add_to(self, weight: torch.Tensor, mult: float, original) -> bool:
        """weight += mult · Δ in place, for a plain LoRA as one fused addmm (no full-size temporaries: 4-6×
        faster on a CPU). `weight` is fp32; `original()` gives the fp32 original for the other formats, whose
        Δ depends on it. False when this delta also changes the bias (use compute)."""
        p = self.parts
        if self.has_bias:
            return False
        if self.kind == "lora" and "lora_mid.weight" not in p and "dora_scale" not in p and weight.is_contiguous():
            up, down = p["lora_up.weight"], p["lora_down.weight"]
            up2 = up.reshape(up.shape[0], -1).to(weight.device, torch.float32)
            down2 = down.reshape(down.shape[0], -1).to(weight.device, torch.float32)
            if up2.shape[0] == weight.shape[0] and up2.shape[0] * down2.shape[1] == weight.numel():
                weight.view(weight.shape[0], -1).addmm_(up2, down2, alpha=mult * _scale(p, down.shape[0]))
                return True
        delta, _ = compute_delta(self.key, self.kind, p, original(), None)
        weight.add_(delta, alpha=mult)
        return True


@dataclass
class ParsedLora:
    name: str
    deltas: dict[str, ModuleDelta]            # target ("unet.…" / "text_encoder.…") → delta
    unmatched: list[str] = field(default_factory=list)   # file keys that were not used
    fingerprint: str = ""                     # identity for LoraPatcher's "same set" test

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = self.name


def _examples(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "")


def _shape_example(module_key: str, parts: Mapping[str, torch.Tensor], weight_shape: torch.Size) -> str:
    """`key: [320, 4] vs the model's [32, 32]`: the file's largest tensor of the module beside the weight."""
    tensors = [(k, v) for k, v in parts.items() if k not in _SCALARS and v.dim() > 0]
    if not tensors:
        return f"{module_key} vs the model's {list(weight_shape)}"
    part, tensor = max(tensors, key=lambda kv: kv[1].numel())
    return f"{module_key}.{part}: {list(tensor.shape)} vs the model's {list(weight_shape)}"


def parse_lora(state_dict: Mapping[str, torch.Tensor], components: Mapping[str, nn.Module | None],
               name: str = "lora", fingerprint: str = "", key_map: Mapping[str, str] | None = None,
               modules: Mapping[str, nn.Module] | None = None) -> ParsedLora:
    """Deltas of `state_dict` for the model `components` ({"unet": …, "text_encoder": …, "text_encoder_2": …}).

    key_map / modules: build_key_map(components) / named_modules(components), pass them to reuse across files.
    Keys whose module is not in the model, or whose shapes do not fit, are listed in `unmatched`.
    Raises LoraError when nothing at all matches: saying so when the names matched but every shape differed
    (a LoRA for another width of the same layout), else that no key matched (wrong architecture / not a LoRA).
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
    wrong_shape: list[str] = []  # names found in the model whose tensors are of another size
    for module_key, parts in grouped.items():
        target = key_map[module_key]
        module = modules[target]
        bias = getattr(module, "bias", None)
        try:
            kind, used = kind_of(parts)
            delta = ModuleDelta(module_key, kind, {k: v for k, v in parts.items()
                                                   if k in used or k in ("alpha", "scale", "dora_scale")},
                                is_text_target(target))
            # shapes checked now, without computing anything: the same math on "meta" tensors
            delta.compute(torch.empty(module.weight.shape, device="meta"), None if bias is None else bias.shape)
        except (LoraError, RuntimeError, IndexError, ValueError):  # e.g. a 0-d factor; an empty alpha or scale
            unmatched.extend(f"{module_key}.{part}" for part in parts)
            wrong_shape.append(_shape_example(module_key, parts, module.weight.shape))
            continue
        if target in deltas:  # a second spelling of a module already taken: reported, not merged twice
            unmatched.extend(f"{module_key}.{part}" for part in parts)
            continue
        unmatched.extend(f"{module_key}.{part}" for part in parts if part not in delta.parts)
        deltas[target] = delta
    if not deltas and wrong_shape:  # the names are this model's, the sizes another's (SD1 vs SD2/SDXL widths)
        raise LoraError(f"LoRA {name!r} does not fit this model: {len(wrong_shape)} module"
                        f"{'s have' if len(wrong_shape) > 1 else ' has'} the wrong shape (e.g. {wrong_shape[0]}); "
                        f"it was made for another architecture")
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
