"""A1111 1.10's prompt language, parsed without torch and without lark: the names the rest of the engine imports.

* ``parse_prompt_attention`` (emphasis.py): emphasis ``(x)`` ``[x]`` ``(x:1.3)``, escapes, ``BREAK``.
* ``get_prompt_schedules`` / ``parse_scheduled`` (editing.py): prompt editing ``[from:to:when]`` and alternation
  ``[a|b]``.
* ``split_and`` (composable.py): composable diffusion, ``a AND b:0.5``.
* ``extract_extra_networks`` (extra_networks.py): ``<lora:name:0.8>`` tags.

Behaviour follows A1111 (``modules/prompt_parser.py``, ``modules/extra_networks.py``), including its handling of
malformed input; each function's docstring says where it knowingly differs. No function raises on any
string, and none recurses on nesting depth.
"""
from __future__ import annotations

from .composable import split_and
from .editing import get_prompt_schedules, parse_scheduled
from .emphasis import parse_prompt_attention
from .extra_networks import ExtraNetworkTag, extract_extra_networks

__all__ = [
    "ExtraNetworkTag",
    "extract_extra_networks",
    "get_prompt_schedules",
    "parse_prompt_attention",
    "parse_scheduled",
    "split_and",
]
