"""Merge LoRA deltas into module weights with exact backups (A1111's default "merge with backup" mode).

    patcher = LoraPatcher()
    patcher.apply(named_modules(components), [(parsed, te_weight, unet_weight), …])   # before a generation
    patcher.restore()                                                                   # back to the checkpoint

Applying the same set (same LoRAs by fingerprint, same weights) again is free; a different set puts back the
originals of the modules it no longer touches and re-merges the others from their originals. Math is fp32
(W.float() + Σ mult·delta, plain LoRAs as one fused addmm each), on the weight's device, cast back to the
weight's dtype in place, so the Parameter objects (and anything holding them) stay the same. A module's original is copied to the CPU the first time it
is patched and kept (as A1111) until forget(): later set changes cost no new copies.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .formats import LoraError, ParsedLora

LoraSet = Sequence[tuple[ParsedLora, float, float]]


def _live(module: nn.Module, name: str) -> torch.Tensor | None:
    """The tensor that holds a module's parameter. With accelerate's sequential offload (--lowvram) the
    parameter is a "meta" placeholder and the real one sits in the hook's weights map."""
    param = getattr(module, name, None)
    if param is None or not param.is_meta:
        return param
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or [hook]:
        weights = getattr(h, "weights_map", None)
        if weights is not None and name in weights:
            return weights[name]
    raise LoraError(f"cannot patch a module whose {name} is not in memory")


class LoraPatcher:
    def __init__(self, backup_device: str | torch.device = "cpu"):
        self.backup_device = torch.device(backup_device)
        # target → (module, original weight, original bias or None), on backup_device
        self._backups: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor | None]] = {}
        self._patched: set[str] = set()  # targets whose weights differ from their backup now
        self.current: tuple = ()

    @staticmethod
    def signature(loras: LoraSet) -> tuple:
        return tuple((p.fingerprint, float(te), float(unet)) for p, te, unet in loras
                     if float(te) != 0.0 or float(unet) != 0.0)

    @property
    def active(self) -> bool:
        return bool(self._patched)

    def apply(self, modules: Mapping[str, nn.Module], loras: LoraSet) -> set[str] | None:
        """Make the model carry exactly `loras`. Returns the targets whose weights changed, or None when the
        set was already in place (nothing done).

        Raises LoraError, with the model restored to its originals, when a LoRA has no delta for this model,
        or a delta cannot be merged (e.g. out of memory half way).
        """
        wanted = self.signature(loras)
        if wanted == self.current:
            return None
        sums: dict[str, list] = {}
        for parsed, te, unet in loras:
            if float(te) == 0.0 and float(unet) == 0.0:
                continue
            hits = [t for t in parsed.deltas if t in modules]
            if not hits:
                keys = sorted(parsed.deltas) or parsed.unmatched
                raise LoraError(f"LoRA {parsed.name!r} does not fit the loaded model: none of its "
                                f"{len(keys)} modules exist in it (wrong architecture?); e.g. "
                                + ", ".join(keys[:5]) + (", …" if len(keys) > 5 else ""))
            for target in hits:
                delta = parsed.deltas[target]
                mult = float(te) if delta.is_text else float(unet)
                if mult != 0.0:
                    sums.setdefault(target, []).append((mult, delta))
        changed = self._patched | set(sums)
        try:
            with torch.no_grad():
                for target in self._patched - set(sums):
                    self._put_back(target)
                    self._patched.discard(target)
                for target, items in sums.items():
                    self._merge(target, modules[target], items)
        except Exception as e:
            self.restore()
            if isinstance(e, LoraError):
                raise
            raise LoraError(f"merging the LoRAs failed, the model is back to its own weights: "
                            f"{type(e).__name__}: {e}") from e
        self.current = wanted
        return changed

    def _merge(self, target: str, module: nn.Module, items: list) -> None:
        weight, bias = _live(module, "weight"), _live(module, "bias")
        if target not in self._backups:
            self._backups[target] = (module, self._backup(weight), None if bias is None else self._backup(bias))
        _, w0, b0 = self._backups[target]
        carries_delta = target in self._patched
        self._patched.add(target)  # from here on a failure must put this module back
        # fp32 weights are merged in place; others through one fp32 copy on their device. A module carrying
        # no delta is its own original: the backup is only read when it carries one (or a format needs it).
        if weight.dtype == torch.float32:
            w = weight.data
            if carries_delta:
                w.copy_(w0)
        else:
            w = (w0.to(weight.device) if carries_delta else weight.detach()).float()
        original_cache = []

        def original() -> torch.Tensor:
            if not original_cache:
                original_cache.append(w0.to(weight.device, torch.float32))
            return original_cache[0]

        b = None if b0 is None else b0.to(bias.device, torch.float32, copy=True)  # never the backup itself
        for mult, delta in items:
            if not delta.add_to(w, mult, original):
                dw, db = delta.compute(original(), None if bias is None else bias.shape)
                w.add_(dw, alpha=mult)
                if db is not None:
                    b.add_(db, alpha=mult)
        if w is not weight.data:
            weight.copy_(w.to(weight.dtype))
        if bias is not None:
            bias.copy_(b.to(bias.dtype))

    def _backup(self, tensor: torch.Tensor) -> torch.Tensor:
        """A copy on backup_device; pinned when it backs up a GPU tensor, so restoring is a fast DMA."""
        pin = tensor.device.type == "cuda" and self.backup_device.type == "cpu"
        copy = torch.empty(tensor.shape, dtype=tensor.dtype, device=self.backup_device, pin_memory=pin)
        return copy.copy_(tensor.detach())

    def _put_back(self, target: str) -> None:
        module, weight, bias = self._backups[target]
        _live(module, "weight").copy_(weight)
        if bias is not None:
            _live(module, "bias").copy_(bias)

    def restore(self) -> None:
        """Put back the exact original tensors of every patched module (backups are kept for the next set)."""
        with torch.no_grad():
            for target in self._patched:
                self._put_back(target)
        self._patched.clear()
        self.current = ()

    def forget(self) -> None:
        """Drop the backups without restoring (the model was replaced, e.g. a new checkpoint was loaded)."""
        self._backups.clear()
        self._patched.clear()
        self.current = ()
