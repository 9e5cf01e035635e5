"""A1111 1.10's prompt editing ``[from:to:when]`` and alternation ``[a|b]``: ``parse_scheduled`` (one prompt) and
``get_prompt_schedules`` (a batch), A1111's ``schedule_parser`` grammar without lark and without recursion."""
from __future__ import annotations

import math
import re

__all__ = ["get_prompt_schedules", "parse_scheduled"]

# The terminals of A1111's grammar. `plain` is anything but the syntax characters, or a backslash escaping any
# character but a newline (escapes are kept verbatim: emphasis reads them later). NUMBER is lark's SIGNED_NUMBER
# (ASCII digits), matched as lark matches it (Python's first-alternative regex match).
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_WHITESPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)")


class _Scheduled:
    """``[before:after:when]``; ``before`` is None for ``[after:when]``."""

    __slots__ = ("after", "before", "number")

    def __init__(self, before: list | None, after: list, number: str):
        self.before, self.after, self.number = before, after, number


class _Alternate:
    """``[a|b|...]``."""

    __slots__ = ("options",)

    def __init__(self, options: list[list]):
        self.options = options


# A parsed prompt is a list of items: str (text, kept verbatim), list (a nested item list: the inside of an
# emphasis bracket, together with its brackets), _Scheduled or _Alternate.


def _number_field(raw: str) -> str | None:
    """The NUMBER of ``[WHITESPACE] NUMBER [WHITESPACE]`` when ``raw`` is exactly that, else None."""
    m = _WHITESPACE.match(raw)
    pos = m.end() if m else 0
    m = _NUMBER.match(raw, pos)
    if m is None:
        return None
    number = m.group()
    pos = m.end()
    m = _WHITESPACE.match(raw, pos)
    if m:
        pos = m.end()
    return number if pos == len(raw) else None


class _Group:
    """A bracket being parsed: its segments (split on ':' or '|') and where each segment starts."""

    __slots__ = ("bracket", "segments", "separator", "start", "starts")

    def __init__(self, bracket: str, start: int):
        self.bracket = bracket
        self.start = start
        self.segments: list[list] = [[]]
        self.starts = [start + 1]
        self.separator = ""

    def split(self, char: str, pos: int) -> bool:
        if self.bracket == "(":
            # "(" prompt ")" | "(" prompt ":" prompt ")"
            if char != ":" or self.separator:
                return False
        elif self.separator and self.separator != char:
            return False  # ':' and '|' never mix
        elif char == ":" and len(self.segments) == 3:
            return False  # at most [before:after:when]
        self.separator = char
        self.segments.append([])
        self.starts.append(pos + 1)
        return True

    def close(self, text: str, char: str, pos: int) -> object | None:
        segments = self.segments
        if self.bracket == "(":
            if char != ")":
                return None
            if len(segments) == 1:
                return ["(", segments[0], ")"]
            return ["(", segments[0], ":", segments[1], ")"]
        if char != "]":
            return None
        if not self.separator:
            return ["[", segments[0], "]"]
        if self.separator == "|":
            return _Alternate(segments)
        number = _number_field(text[self.starts[-1]:pos])
        if number is None:
            return None
        if len(segments) == 2:
            return _Scheduled(None, segments[0], number)
        return _Scheduled(segments[0], segments[1], number)


_MISSING = object()


def _parse_group(text: str, start: int, memo: dict) -> tuple[int, object] | None:
    """Parse the bracket construct opening at ``text[start]`` (iteratively: nesting depth is unbounded).

    Inside a construct every bracket must itself form a construct, so the parse from a given position is unique
    and does not depend on what encloses it: results (end, item) or None are memoised per position, and a failure
    fails every construct still open around it.
    """
    stack = [_Group(text[start], start)]
    pos, n = start + 1, len(text)
    while pos < n:
        group = stack[-1]
        char = text[pos]
        if char == "(" or char == "[":
            known = memo.get(pos, _MISSING)
            if known is _MISSING:
                stack.append(_Group(char, pos))
                pos += 1
                continue
            if known is None:
                break
            group.segments[-1].append(known[1])
            pos = known[0]
        elif char == ")" or char == "]":
            item = group.close(text, char, pos)
            if item is None:
                break
            pos += 1
            memo[group.start] = (pos, item)
            stack.pop()
            if not stack:
                return pos, item
            stack[-1].segments[-1].append(item)
        elif char == ":" or char == "|":
            if not group.split(char, pos):
                break
            pos += 1
        else:
            m = _PLAIN.match(text, pos)
            if m is None:  # a backslash at the end or before a newline matches nothing
                break
            group.segments[-1].append(m.group())
            pos = m.end()
    for group in stack:
        memo[group.start] = None
    return None


def _parse_schedule_tree(prompt: str) -> list | None:
    """A1111's ``schedule_parser`` (lark) parse of ``prompt`` as an item list, or None where lark rejects it.

    Outside brackets, stray ``( ) [ ] :`` are plain text (A1111's ``start`` rule). A bracket that starts a
    well-formed construct is parsed as that construct, outermost first; this is the reading of every example in
    A1111's docstrings. (Where a prompt can be read both ways, lark's choice between them can depend on Python's
    string-hash seed, so A1111 itself is not deterministic there; see the tests.) A ``|`` outside any
    alternation, or a backslash before a newline or at the end, is a parse error.
    """
    memo: dict = {}
    items: list = []
    pos, n = 0, len(prompt)
    while pos < n:
        char = prompt[pos]
        if char == "(" or char == "[":
            parsed = memo.get(pos, _MISSING)
            if parsed is _MISSING:
                parsed = _parse_group(prompt, pos, memo)
            if parsed is None:
                items.append(char)
                pos += 1
            else:
                items.append(parsed[1])
                pos = parsed[0]
        elif char == ")" or char == "]" or char == ":":
            items.append(char)
            pos += 1
        elif char == "|":
            return None
        else:
            m = _PLAIN.match(prompt, pos)
            if m is None:
                return None
            items.append(m.group())
            pos = m.end()
    return items


def _walk(items: list):
    """Every _Scheduled and _Alternate in the tree, iteratively."""
    stack = [items]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, _Scheduled):
                yield item
                if item.before is not None:
                    stack.append(item.before)
                stack.append(item.after)
            elif isinstance(item, _Alternate):
                yield item
                stack.extend(item.options)


def _when(number: str, steps: int) -> float:
    """A1111 1.10 (new scheduling, no hires): a number with a '.' is a fraction of the steps, others a step;
    truncated to int and clipped to ``steps``. A1111 raises OverflowError on infinite values; here +inf is
    ``steps`` and -inf never switches."""
    value = float(number)
    if "." in number:
        value *= steps
    if math.isfinite(value):
        return min(steps, int(value))
    return min(steps, value)


def _render(items: list, step: int, whens: dict) -> str:
    out: list[str] = []
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if type(item) is str:
                out.append(item)
            elif type(item) is list:
                stack.append(iter(item))
                break
            elif type(item) is _Scheduled:
                chosen = item.before if step <= whens[id(item)] else item.after
                if chosen:
                    stack.append(iter(chosen))
                    break
            else:
                stack.append(iter(item.options[(step - 1) % len(item.options)]))
                break
        else:
            stack.pop()
    return "".join(out)


def parse_scheduled(prompt: str, steps: int) -> list[tuple[int, str]]:
    """One prompt's schedule: (end_at_step, text) pairs, end steps increasing and the last one ``steps``.

    ``[from:to:when]`` uses ``from`` up to and including step ``when`` and ``to`` after it; ``[to:when]`` adds,
    ``[from::when]`` removes. ``when`` with a '.' is a fraction of ``steps`` (``int(f*steps)``), otherwise a step
    number; either is clipped to ``steps``, and values below 1 never add a switch point. ``[a|b|c]`` picks
    ``options[(step-1) % n]`` at every step. Emphasis brackets and escapes are kept in the text. A prompt A1111's
    grammar rejects is used as it is: ``[(steps, prompt)]``.
    """
    if not isinstance(prompt, str):
        prompt = str(prompt)
    try:
        steps = int(steps)
    except (TypeError, ValueError, OverflowError):
        steps = 1
    tree = _parse_schedule_tree(prompt)
    if tree is None:
        return [(steps, prompt)]
    points = {steps}
    whens: dict[int, float] = {}
    alternates = False
    for node in _walk(tree):
        if type(node) is _Scheduled:
            when = _when(node.number, steps)
            whens[id(node)] = when
            if when >= 1:
                points.add(when)
        else:
            alternates = True
    if alternates:
        points.update(range(1, steps + 1))
    return [(step, _render(tree, step, whens)) for step in sorted(points)]


def get_prompt_schedules(prompts: list[str], steps: int) -> list[list[tuple[int, str]]]:
    """A1111 1.10's ``get_learned_conditioning_prompt_schedules(prompts, steps)`` (no hires pass, new
    scheduling): one ``parse_scheduled`` list per prompt."""
    cache: dict[str, list[tuple[int, str]]] = {}
    result = []
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = parse_scheduled(prompt, steps)
        result.append(list(cache[prompt]))
    return result
