"""Prompt styles in A1111's styles.csv (columns name, prompt, negative_prompt; a "{prompt}" placeholder puts the
user's prompt inside the style, otherwise the style is appended after ", ").

Styles are applied when a job starts, so the infotext holds the styled prompts, as A1111's does; pasting such an
infotext finds the styles again by taking their text off the end (or the frame, for "{prompt}" styles) of both
prompts, the way A1111's "Apply if any" paste does."""
from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)
PLACEHOLDER = "{prompt}"
COLUMNS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge(style_text: str, prompt: str) -> str:
    """One style's text over a prompt: substituted into "{prompt}", or appended after ", " (empty parts
    dropped)."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def _take_off(style_text: str, prompt: str) -> str | None:
    """The prompt before `style_text` was merged into it, or None when it does not carry the style."""
    text, styled = style_text.strip(), prompt.strip()
    if PLACEHOLDER in text:
        before, _, after = text.partition(PLACEHOLDER)
        if styled.startswith(before) and styled.endswith(after) and len(styled) >= len(before) + len(after):
            return styled[len(before):len(styled) - len(after)]
        return None
    if not styled.endswith(text):
        return None
    rest = styled[:len(styled) - len(text)]
    return rest[:-2] if rest.endswith(", ") else rest


class StyleDatabase:
    """styles.csv, re-read when the file changes; edits are written back atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = None
        self._styles: dict[str, Style] = {}

    def _fresh(self) -> dict[str, Style]:
        try:
            stat = self.path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._styles = self._read() if stamp is not None else {}
            self._stamp = stamp
        return self._styles

    def _read(self) -> dict[str, Style]:
        try:
            text = self.path.read_text(encoding="utf-8-sig")  # A1111 writes a BOM on Windows
        except (OSError, UnicodeDecodeError) as e:
            log.warning("cannot read %s: %s", self.path, e)
            return {}
        styles = {}
        for row in csv.DictReader(io.StringIO(text)):
            name = (row.get("name") or "").strip()
            if name:
                styles[name] = Style(name, row.get("prompt") or "", row.get("negative_prompt") or "")
        return styles

    def names(self) -> list[str]:
        with self._lock:
            return list(self._fresh())

    def get(self, name: str) -> Style | None:
        with self._lock:
            return self._fresh().get(name)

    def apply(self, prompt: str, negative_prompt: str, names: list[str]) -> tuple[str, str, list[str]]:
        """(styled prompt, styled negative prompt, the names not found), styles in the order given."""
        missing = []
        with self._lock:
            styles = self._fresh()
            for name in names:
                style = styles.get(name)
                if style is None:
                    missing.append(name)
                    continue
                prompt, negative_prompt = merge(style.prompt, prompt), merge(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt, missing

    def extract(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """(the styles a styled prompt carries, in the order they were applied, the prompts without them).
        A style counts when both of its texts come off; the last applied comes off first."""
        with self._lock:
            candidates = [s for s in self._fresh().values() if s.prompt or s.negative_prompt]
        found = []
        while True:
            for style in candidates:
                positive, negative = _take_off(style.prompt, prompt), _take_off(style.negative_prompt, negative_prompt)
                if positive is not None and negative is not None:
                    prompt, negative_prompt = positive, negative
                    candidates.remove(style)
                    found.append(style.name)
                    break
            else:
                return list(reversed(found)), prompt, negative_prompt

    def save(self, style: Style) -> None:
        """Add or replace a style (by name)."""
        if not style.name.strip():
            raise UserError("a style needs a name")
        with self._lock:
            styles = dict(self._fresh())
            styles[style.name.strip()] = Style(style.name.strip(), style.prompt, style.negative_prompt)
            self._write(styles)

    def delete(self, name: str) -> None:
        with self._lock:
            styles = dict(self._fresh())
            if styles.pop(name, None) is None:
                raise UserError(f"no style named {name!r}")
            self._write(styles)

    def _write(self, styles: dict[str, Style]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".styles-", suffix=".csv.tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                for style in styles.values():
                    writer.writerow({"name": style.name, "prompt": style.prompt,
                                     "negative_prompt": style.negative_prompt})
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None  # re-read on next use
