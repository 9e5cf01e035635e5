"""Merge LoRA deltas into module weights with exact backups (A1111's default "merge with backup" mode).

    patcher = LoraPatcher()
    patcher.apply(named_modules(components), [(parsed, te_weight, unet_weight), …])   # before a generation
    patcher.restore()                                                                   # back to the checkpoint

Applying the same set (same LoRAs by fingerprint, same weights) again is free; a different set restores first.
Math is fp32 (W.float() + Σ mult·delta) and the result is cast back to the weight's dtype in place, so the
Parameter objects (and anything holding them) stay the same. Backups are clones on the CPU; restore copies them
back bit for bit.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .formats import LoraError, ParsedLora

LoraSet = Sequence[tuple[ParsedLora, float, float]]


class LoraPatcher:
    def __init__(self, backup_device: str | torch.device = "cpu"):
        self.backup_device = torch.device(backup_device)
        # target → (module, weight backup, bias backup or None)
        self._backups: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor | None]] = {}
        self.current: tuple = ()

    @staticmethod
    def signature(loras: LoraSet) -> tuple:
        return tuple((p.fingerprint, float(te), float(unet)) for p, te, unet in loras
                     if float(te) != 0.0 or float(unet) != 0.0)

    @property
    def active(self) -> bool:
        return bool(self._backups)

    def apply(self, modules: Mapping[str, nn.Module], loras: LoraSet) -> bool:
        """Make the model carry exactly `loras`. Returns False when that was already so (nothing done).

        Raises LoraError, with the model left exactly as it was, when a LoRA has no delta for this model
        or a delta does not fit its module.
        """
        wanted = self.signature(loras)
        if wanted == self.current:
            return False
        # Validate everything before touching a weight.
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
                delta, module = parsed.deltas[target], modules[target]
                if delta.weight.shape != module.weight.shape or (
                        delta.bias is not None and (module.bias is None or delta.bias.shape != module.bias.shape)):
                    raise LoraError(f"LoRA {parsed.name!r}: delta for {target} does not fit the module")
                mult = float(te) if delta.is_text else float(unet)
                if mult != 0.0:
                    sums.setdefault(target, []).append((mult, delta))
        self.restore()
        with torch.no_grad():
            for target, items in sums.items():
                module = modules[target]
                weight, bias = module.weight, module.bias
                self._backups[target] = (
                    module, weight.detach().to(self.backup_device, copy=True),
                    None if bias is None else bias.detach().to(self.backup_device, copy=True))
                w = weight.detach().float()
                for mult, delta in items:
                    w = w + mult * delta.weight.to(w.device)
                weight.copy_(w.to(weight.dtype))
                if any(d.bias is not None for _, d in items):
                    b = bias.detach().float()
                    for mult, delta in items:
                        if delta.bias is not None:
                            b = b + mult * delta.bias.to(b.device)
                    bias.copy_(b.to(bias.dtype))
        self.current = wanted
        return True

    def restore(self) -> None:
        """Put back the exact original tensors of every patched module."""
        with torch.no_grad():
            for module, weight, bias in self._backups.values():
                module.weight.copy_(weight.to(module.weight.device))
                if bias is not None:
                    module.bias.copy_(bias.to(module.bias.device))
        self._backups.clear()
        self.current = ()

    def forget(self) -> None:
        """Drop the backups without restoring (the model was replaced, e.g. a new checkpoint was loaded)."""
        self._backups.clear()
        self.current = ()
