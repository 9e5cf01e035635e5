"""LoRA / LyCORIS support: key mapping (keys), file parsing into per-module deltas (formats), merging with backups (apply)."""
from .apply import LoraPatcher
from .formats import (
           LoraError,
           ModuleDelta,
           ParsedLora,
           load_lora,
           load_state_dict,
           parse_lora,
)
from .keys import build_key_map, named_modules

__all__ = [
           "LoraError",
           "LoraPatcher",
           "ModuleDelta",
           "ParsedLora",
           "build_key_map",
           "load_lora",
           "load_state_dict",
           "named_modules",
           "parse_lora",
]
