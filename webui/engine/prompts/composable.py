"""Composable diffusion: ``split_and`` splits ``a AND b:0.5`` into weighted parts as A1111's
``get_multicond_prompt_list`` does."""
from __future__ import annotations

import re

__all__ = ["split_and"]

_AND = re.compile(r"\bAND\b")
_WEIGHT_NUMBER = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


def _split_weight(part: str) -> tuple[str, float]:
    """A1111's ``re_weight`` on one AND part: trailing ``:number`` (spaces allowed) is the weight, and the text
    keeps everything before the spaces preceding the ':'; without a weight, trailing whitespace is dropped.

    Done by scanning from the end: the regex form (a lazy prefix) is quadratic on long whitespace runs.
    """
    end = len(part.rstrip())
    start = end
    while start > 0 and (part[start - 1] == "." or part[start - 1].isdecimal()):
        start -= 1
    if start > 0 and part[start - 1] in "+-":
        start -= 1
    number = part[start:end]
    if number and _WEIGHT_NUMBER.fullmatch(number):
        colon = len(part[:start].rstrip())
        if colon > 0 and part[colon - 1] == ":":
            try:
                weight = float(number)
            except ValueError:
                weight = None
            if weight is not None:
                return part[:len(part[:colon - 1].rstrip())], weight
    return part[:end], 1.0


def split_and(prompt: str) -> list[tuple[str, float]]:
    """A1111's ``get_multicond_prompt_list`` for one prompt: the parts between ``AND`` (the whole word) with
    their weights, ``"a AND b:0.5"`` → ``[("a", 1.0), (" b", 0.5)]``. Leading whitespace is kept as in A1111."""
    if not isinstance(prompt, str):
        prompt = str(prompt)
    return [_split_weight(part) for part in _AND.split(prompt)]
