"""A1111 1.10's emphasis language: ``parse_prompt_attention`` reads ``(x)`` ``[x]`` ``(x:1.3)``, escapes and
``BREAK`` into (text, weight) runs with A1111's exact float weights, in two linear passes and without recursion."""
from __future__ import annotations

import math
import re
from operator import itemgetter

__all__ = ["parse_prompt_attention"]

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


def _scan_brackets(text: str) -> tuple[list[tuple], list[float], list[int], int]:
    """Pass 1: tokens -> events, and the multiplier and application order of every bracket.

    Returns (events, multiplier, order, closing): brackets whose order is ``closing`` or more never close."""
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
    closing = applied
    for bracket in round_open + square_open:
        order[bracket] = applied
        applied += 1
    return events, multiplier, order, closing


def _weigh_entries(events: list[tuple], multiplier: list[float], order: list[int],
                   closing: int) -> list[tuple[str, float]]:
    """Pass 2: replay the events with stacks of the open brackets and merge equal-weight neighbours.

    An entry's weight is 1.0 times the multipliers of the brackets open when it was added, in application order,
    accumulated left to right exactly as A1111 does. Within one stack, brackets that will close sit above those
    that never do (a stack pops from the top), the closing ones apply top first and the never-closing ones bottom
    first."""
    rounds: list[float] = []
    squares: list[float] = []
    round_orders: list[int] = []
    square_orders: list[int] = []
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
    return _weigh_entries(*_scan_brackets(text))
