"""From a prompt's `<lora:…>` tags to a model carrying exactly those LoRAs (A1111's extra_networks_lora)."""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from ..prompts.parser import ExtraNetworkTag
from .apply import LoraPatcher
from .formats import LoraError, ParsedLora, load_state_dict, parse_lora
from .keys import build_key_map, is_text_target, named_modules
from .library import LoraInfo, LoraLibrary

log = logging.getLogger(__name__)

TAG_KINDS = ("lora", "lyco")  # <lyco:…> is the old LyCORIS extension's spelling, same meaning


@dataclass(frozen=True)
class LoraRequest:
    name: str
    te: float = 1.0
    unet: float = 1.0


def _number(tag: ExtraNetworkTag, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise LoraError(f"<{tag.kind}:{':'.join(tag.args)}>: {value!r} is not a number") from None
    if not math.isfinite(number):  # merged, a NaN or infinite multiplier turns every picture black
        raise LoraError(f"<{tag.kind}:{':'.join(tag.args)}>: {value!r} is not a finite number")
    return number


def lora_requests(tags: list[ExtraNetworkTag]) -> list[LoraRequest]:
    """A1111's reading of `<lora:name[:te[:unet[:dyn]]]>` and `te=`, `unet=` named forms. te defaults to 1,
    unet to te; a name given twice is applied twice (the effects add, as in A1111). dyn (DyLoRA rank) is
    accepted and not used."""
    out = []
    for tag in tags:
        if tag.kind not in TAG_KINDS:
            continue
        positional, named = tag.positional, tag.named
        if not positional or not positional[0].strip():
            raise LoraError(f"<{tag.kind}:{':'.join(tag.args)}>: no LoRA name")
        te = _number(tag, positional[1]) if len(positional) > 1 else 1.0
        te = _number(tag, named["te"]) if "te" in named else te
        unet = _number(tag, positional[2]) if len(positional) > 2 else te
        unet = _number(tag, named["unet"]) if "unet" in named else unet
        out.append(LoraRequest(positional[0].strip(), te, unet))
    return out


def infotext_name(info: LoraInfo) -> str:
    # A1111 strips ":" and "," from names inside the list
    return info.alias.replace(":", "").replace(",", "")


def format_lora_hashes(entries: list[tuple[str, str]]) -> str:
    return ", ".join(f"{name}: {short}" for name, short in entries)


def parse_lora_hashes(value: str) -> dict[str, str]:
    """`Lora hashes` infotext value (already unquoted) → {name: 12-hex hash}."""
    out = {}
    for item in value.split(","):
        name, sep, short = item.rpartition(":")
        if sep and name.strip():
            out[name.strip()] = short.strip()
    return out


@dataclass
class Activation:
    """What activating a prompt's LoRAs did: infotext fields, warnings for the user, text encoder changed."""
    infotext: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    text_changed: bool = False


class ModelLoras:
    """One loaded model's LoRA state: its key map, its patcher, and the LoRA files parsed for it (LRU)."""

    def __init__(self, components):
        self.components = {"unet": components.unet, "text_encoder": components.text_encoder,
                           "text_encoder_2": components.text_encoder_2}
        self.patcher = LoraPatcher()
        self._parsed: OrderedDict[str, ParsedLora] = OrderedDict()
        self._key_map: dict | None = None
        self._modules: dict | None = None

    @property
    def modules(self) -> dict:
        if self._modules is None:
            self._modules = named_modules(self.components)
            self._key_map = build_key_map(self.components)
        return self._modules

    def parsed(self, info: LoraInfo) -> ParsedLora:
        """The file parsed for this model, from the cache when it has not changed on disk."""
        found = self._parsed.get(info.fingerprint)
        if found is not None:
            self._parsed.move_to_end(info.fingerprint)
            return found
        modules = self.modules
        parsed = parse_lora(load_state_dict(info.path), self.components, info.name, info.fingerprint,
                            self._key_map, modules)
        self._parsed[info.fingerprint] = parsed
        return parsed

    def activate(self, library: LoraLibrary, requests: list[LoraRequest], cache_limit: int) -> Activation:
        """Merge exactly `requests` (restoring whatever else was merged). A name with no file is skipped with a
        warning; an unreadable or unfit file raises LoraError and nothing changes."""
        result = Activation()
        wanted, hashes = [], []
        for request in requests:
            try:
                info = library.find(request.name)
            except LoraError as e:  # as A1111 ("Networks not found"): a pasted prompt still generates
                result.warnings.append(f"{e}: generated without it")
                log.warning(result.warnings[-1])
                continue
            parsed = self.parsed(info)
            if parsed.unmatched:
                n = len(parsed.unmatched)
                result.warnings.append(
                    f"LoRA {request.name}: {n} key{'s' if n > 1 else ''} matched nothing in this model and "
                    f"{'were' if n > 1 else 'was'} skipped, e.g. " + ", ".join(parsed.unmatched[:3]))
                log.warning(result.warnings[-1])
            wanted.append((parsed, request.te, request.unet))
            if request.te != 0 or request.unet != 0:
                hashes.append((infotext_name(info), library.short_hash(info)))
        try:
            changed = self.patcher.apply(self.modules, wanted)
        finally:  # the merged weights need no parsed file: keep only the `cache_limit` most recent
            while len(self._parsed) > max(0, int(cache_limit)):
                self._parsed.popitem(last=False)
        result.text_changed = bool(changed) and any(is_text_target(t) for t in changed)
        if hashes:
            result.infotext["Lora hashes"] = format_lora_hashes(hashes)
        return result
