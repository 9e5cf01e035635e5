"""A1111 1.10's prompt language, parsed without torch and without lark.

* ``parse_prompt_attention``: emphasis ``(x)`` ``[x]`` ``(x:1.3)``, escapes, ``BREAK``.
* ``get_prompt_schedules`` / ``parse_scheduled``: prompt editing ``[from:to:when]`` and alternation ``[a|b]``.
* ``split_and``: composable diffusion, ``a AND b:0.5``.
* ``extract_extra_networks``: ``<lora:name:0.8>`` tags.

Behaviour follows A1111 (``modules/prompt_parser.py``, ``modules/extra_networks.py``), including its handling of
malformed input; each function's docstring says where it knowingly differs. No function raises on any
string, and none recurses on nesting depth.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from operator import itemgetter

__all__ = [
    "ExtraNetworkTag",
    "extract_extra_networks",
    "get_prompt_schedules",
    "parse_prompt_attention",
    "parse_scheduled",
    "split_and",
]

# ---------------------------------------------------------------------------------------------------------------
# Emphasis
# ---------------------------------------------------------------------------------------------------------------

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One token of the emphasis language, tried in this order at each position (the order decides, e.g. ``\(`` is an
# escape and never an opening bracket):
#   esc     a backslash, with the bracket or backslash it escapes if one follows (a lone backslash yields "")
#   open    "(" or "["
#   weight  ":<number>)" closing a round bracket with an explicit weight (spaces allowed around the number)
#   close   ")" or "]"
#   text    a run of ordinary characters, or a single ":" that starts no weight
_EMPHASIS_TOKEN = re.compile(
    r"""
      \\ (?P<esc> [()\[\]\\] )?
    | (?P<open> [(\[] )
    | : \s* (?P<weight> [+-]? [.\d]+ ) \s* \)
    | (?P<close> [)\]] )
    | (?P<text> [^\\()\[\]:]+ | : )
    """,
    re.VERBOSE,
)
_BREAK_WORD = re.compile(r"\bBREAK\b")
_SPACES = re.compile(r"\s*")

_PUSH, _POP, _ENTRY = 0, 1, 2


def _split_break(chunk: str) -> list[str]:
    r"""``re.split(r"\s*\bBREAK\b\s*", chunk)`` (A1111's ``re_break``) in linear time: the regex backtracks
    quadratically on long whitespace runs. Each whole-word BREAK takes the whitespace on both sides of it, not
    reaching back into the previous match."""
    if "BREAK" not in chunk:
        return [chunk]
    parts = []
    last = 0
    for m in _BREAK_WORD.finditer(chunk):
        start, end = m.start(), m.end()
        if start < last:
            continue
        while start > last and chunk[start - 1].isspace():
            start -= 1
        end = _SPACES.match(chunk, end).end()
        parts.append(chunk[last:start])
        last = end
    parts.append(chunk[last:])
    return parts


def _product(rounds: list[float], round_orders: list[int], round_unclosed: int,
             squares: list[float], square_orders: list[int], square_unclosed: int) -> float:
    """1.0 times the open brackets' multipliers in A1111's order: brackets that close (in closing order), then
    never-closing round brackets, then never-closing square ones (each outermost first)."""
    closing_rounds = rounds[round_unclosed:]
    closing_squares = squares[square_unclosed:]
    if closing_rounds and closing_squares:
        pairs = sorted(zip(round_orders[round_unclosed:] + square_orders[square_unclosed:],
                           closing_rounds + closing_squares))
        weight = math.prod(map(itemgetter(1), pairs), start=1.0)
    else:
        closing = closing_rounds or closing_squares
        closing.reverse()
        weight = math.prod(closing, start=1.0)
    if round_unclosed:
        weight = math.prod(rounds if round_unclosed == len(rounds) else rounds[:round_unclosed], start=weight)
    if square_unclosed:
        weight = math.prod(squares if square_unclosed == len(squares) else squares[:square_unclosed], start=weight)
    return weight


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into (text, weight) runs as A1111's ``prompt_parser.parse_prompt_attention`` does.

    ``(x)`` multiplies by 1.1, ``[x]`` by 1/1.1, ``(x:w)`` by w; nesting multiplies; a bracket left open applies
    to the end of the text and a closing bracket with nothing open is literal text; ``\\( \\) \\[ \\] \\\\`` are
    literal and any other backslash is dropped. ``BREAK`` (the whole word) gives an entry ``("BREAK", -1.0)``;
    inside brackets its weight is multiplied like any other entry's (as in A1111, where it then no longer acts as
    a break). Adjacent entries with equal weights are merged; no entries at all gives ``[("", 1.0)]``.

    Weights are the same floats as A1111's: each entry's weight is 1.0 multiplied by the multipliers of the
    brackets around it, in the order A1111 applies them (the order brackets close, then brackets left open: round
    ones first, each kind outermost first).

    Differs from A1111 only where A1111 raises: a weight such as ``(x:1.2.3)`` or ``(x:.)`` that Python cannot
    read as a float makes A1111 fail with ValueError; here the ``:`` is read as text instead, so the bracket
    closes with the plain 1.1.
    """
    if not isinstance(text, str):
        text = str(text)

    # Pass 1: tokens -> events, and the multiplier and application order of every bracket.
    events: list[tuple] = []
    multiplier: list[float] = []
    order: list[int] = []
    round_open: list[int] = []
    square_open: list[int] = []
    applied = 0

    def add_text(chunk: str) -> None:
        parts = _split_break(chunk)
        events.append((_ENTRY, parts[0], False))
        for part in parts[1:]:
            events.append((_ENTRY, "BREAK", True))
            events.append((_ENTRY, part, False))

    def close(stack: list[int], value: float) -> None:
        nonlocal applied
        bracket = stack.pop()
        multiplier[bracket] = value
        order[bracket] = applied
        applied += 1
        events.append((_POP, stack is round_open))

    pos, n = 0, len(text)
    while pos < n:
        m = _EMPHASIS_TOKEN.match(text, pos)
        kind = m.lastgroup
        token = m.group()
        if token[0] == "\\":
            events.append((_ENTRY, m.group("esc") or "", False))
        elif kind == "open":
            bracket = len(multiplier)
            multiplier.append(ROUND_MULTIPLIER if token == "(" else SQUARE_MULTIPLIER)
            order.append(-1)
            (round_open if token == "(" else square_open).append(bracket)
            events.append((_PUSH, bracket, token == "("))
        elif kind == "weight" and round_open:
            try:
                value = float(m.group("weight"))
            except ValueError:  # "1.2.3", ".", "+.": A1111 raises here; read the ":" as text instead
                add_text(":")
                pos += 1
                continue
            close(round_open, value)
        elif token == ")" and round_open:
            close(round_open, ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            close(square_open, SQUARE_MULTIPLIER)
        else:
            add_text(token)
        pos = m.end()

    # Brackets never closed apply last: round ones, then square ones, each from the outermost in.
    for bracket in round_open + square_open:
        order[bracket] = applied
        applied += 1

    # Pass 2: replay with stacks of the open brackets. An entry's weight is 1.0 times the multipliers of the brackets
    # open when it was added, in application order, accumulated left to right exactly as A1111 does. Within one
    # stack, brackets that will close sit above those that never do (a stack pops from the top), the closing ones
    # apply top first and the never-closing ones bottom first.
    rounds: list[float] = []
    squares: list[float] = []
    round_orders: list[int] = []
    square_orders: list[int] = []
    closing = applied - len(round_open) - len(square_open)  # orders below this belong to brackets that close
    unclosed = [0, 0]  # never-closing brackets at the bottom of each stack
    weight = 1.0
    stale = False
    out_text: list[list[str]] = []
    out_weight: list[float] = []
    for event in events:
        if event[0] == _PUSH:
            bracket = event[1]
            if event[2]:
                rounds.append(multiplier[bracket])
                round_orders.append(order[bracket])
            else:
                squares.append(multiplier[bracket])
                square_orders.append(order[bracket])
            if order[bracket] >= closing:
                unclosed[0 if event[2] else 1] += 1
                # A never-closing bracket applies after every bracket already open (unless it is round and
                # never-closing square ones are open: those apply after it), so the running product just extends.
                if not stale and (not event[2] or not unclosed[1]):
                    weight *= multiplier[bracket]
                    continue
            stale = True
        elif event[0] == _POP:
            if event[1]:
                rounds.pop()
                round_orders.pop()
            else:
                squares.pop()
                square_orders.pop()
            stale = True
        else:
            if stale:
                weight = _product(rounds, round_orders, unclosed[0], squares, square_orders, unclosed[1])
                stale = False
            w = -weight if event[2] else weight
            if out_weight and out_weight[-1] == w:
                out_text[-1].append(event[1])
            else:
                out_text.append([event[1]])
                out_weight.append(w)

    if not out_weight:
        return [("", 1.0)]
    return [("".join(t), w) for t, w in zip(out_text, out_weight)]


# ---------------------------------------------------------------------------------------------------------------
# Prompt editing and alternation
# ---------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------
# AND
# ---------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------
# Extra networks
# ---------------------------------------------------------------------------------------------------------------

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkTag:
    """``<kind:arg1:arg2...>``, e.g. ``<lora:foo:0.8>`` → ``ExtraNetworkTag("lora", ("foo", "0.8"))``.
    Named arguments stay strings: ``<lora:foo:te=0.5:unet=1>`` → args ``("foo", "te=0.5", "unet=1")``."""

    kind: str
    args: tuple[str, ...]

    @property
    def positional(self) -> tuple[str, ...]:
        """The arguments without '=' (A1111's ``ExtraNetworkParams.positional``)."""
        return tuple(a for a in self.args if len(a.split("=", 2)) != 2)

    @property
    def named(self) -> dict[str, str]:
        """``key=value`` arguments (A1111's ``ExtraNetworkParams.named``)."""
        return dict(a.split("=", 1) for a in self.args if len(a.split("=", 2)) == 2)


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetworkTag]]:
    """A1111's ``extra_networks.parse_prompt``: every ``<kind:args>`` tag is removed from the text (replaced by
    nothing, the spaces around it stay) and returned in order of appearance."""
    if not isinstance(prompt, str):
        prompt = str(prompt)
    tags: list[ExtraNetworkTag] = []

    def take(m: re.Match) -> str:
        tags.append(ExtraNetworkTag(m.group(1), tuple(m.group(2).split(":"))))
        return ""

    # No tag can end after the last '>'; leaving that tail out keeps the regex linear (each '<' without a later
    # '>' would otherwise scan to the end of the text).
    end = prompt.rfind(">") + 1
    return _EXTRA_NETWORK.sub(take, prompt[:end]) + prompt[end:], tags
