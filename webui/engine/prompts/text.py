"""Prompt text the tokenizer can take: a lone UTF-16 surrogate (a broken paste, a bad API client) cannot be
encoded and would fail the job inside the tokenizer, so it is replaced by U+FFFD first, with a warning."""
from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_prompt(text: str) -> tuple[str, str | None]:
    """(text with unencodable characters replaced, a warning naming how many, or None)."""
    cleaned, count = _SURROGATE.subn("\ufffd", text or "")
    if not count:
        return text, None
    return cleaned, f"{count} unencodable character(s) (lone surrogates) in the prompt were replaced by �"
