"""The X/Y/Z plot's value syntax, read as AUTOMATIC1111 1.10 reads it (`scripts/xyz_grid.py`: re_range,
re_range_float, re_range_count, re_range_count_float, process_axis), so a values line pasted from A1111 (or from
its infotext) gives the same cells here, quirks included: `10-1 (-3)` stops at 4 (A1111's end+1 bound),
`0.1-0.3 (+0.1)` also yields 0.4 and `1-10 [5]` truncates toward zero. The float values are numpy's
arange/linspace values to the last bit, computed the way numpy does, so no numpy is needed.

Where A1111 would crash with a traceback or silently plot nothing, this raises UserError naming the item; and it
reads a few spellings A1111 rejects: an unsigned step `(2)`, `.5` or `- 5` inside a range, and `1e-3` (A1111's
unescaped `.` made that a range "1e"-"3" and a crash). Empty items (a trailing comma) are skipped for numbers and
kept for strings.
"""
from __future__ import annotations

import csv
import io
import math
import re

from webui.engine.errors import UserError

PREFIX = "X/Y/Z plot"
# Far beyond any grid that fits A1111's image size limit; stops a typo like 1-1000000000 from eating the memory
# before that limit is checked.
MAX_VALUES = 10_000

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
# start-end, then an optional (step) or [count]; the same shapes as A1111's four patterns.
_INT_RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*({_INT})\s*\)|\s*\[\s*(\d+)\s*])?\s*")
_FLOAT_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*({_FLOAT})\s*\)|\s*\[\s*(\d+)\s*])?\s*")


def _error(message: str) -> UserError:
    return UserError(f"{PREFIX}: {message}")


def split_values(text: str) -> list[str]:
    """A1111's csv_string_to_list_strip: every line is a CSV row (so `"a, b", c` is two items), items stripped.
    As in A1111, a quote only counts at the very start of an item: `a, "b, c"` splits inside the quotes."""
    try:
        return [item.strip() for row in csv.reader(io.StringIO(text or "")) for item in row]
    except csv.Error as e:
        raise _error(f"cannot read the values ({e})") from None


def parse_str_values(text: str) -> list[str]:
    return split_values(text)


def _num(text: str, kind: type):
    return kind(re.sub(r"\s+", "", text))


def _check_count(item: str, n: int) -> None:
    if n <= 0:
        raise _error(f"'{item}' gives no values (to count down, give a count, e.g. 10-1 [10])")
    if n > MAX_VALUES:
        raise _error(f"'{item}' gives more than {MAX_VALUES} values")


def _arange(item: str, start: float, stop: float, step: float) -> list[float]:
    # numpy.arange for floats: length ceil((stop-start)/step); value 1 is start+step and value i>=2 is
    # start + i*((start+step) - start) — that delta, not step, is why A1111 shows 1.2000000000000002.
    n = math.ceil((stop - start) / step)
    _check_count(item, n)
    delta = (start + step) - start
    return [start, start + step, *(start + i * delta for i in range(2, n))][:n]


def _linspace(item: str, start: float, stop: float, num: int) -> list[float]:
    # numpy.linspace with endpoint=True: i*step + start, the last value set to stop exactly.
    _check_count(item, num)
    if num == 1:
        return [0.0 * (stop - start) + start]
    div = num - 1
    step = (stop - start) / div
    if step == 0:
        values = [(i / div) * (stop - start) + start for i in range(num)]
    else:
        values = [i * step + start for i in range(num)]
    values[-1] = stop
    return values


def parse_int_values(text: str) -> list[int]:
    """Items: `5`, `1-5` (inclusive), `1-10 (+2)` (step), `10-1 (-3)` (A1111's end+1 bound: 10, 7, 4), `1-10 [5]`
    (5 values spread evenly, each truncated toward zero as int() does)."""
    values: list[int] = []
    for item in split_values(text):
        if not item:
            continue
        m = _INT_RANGE.fullmatch(item)
        if m is None:
            try:
                values.append(_num(item, int))
            except ValueError:
                raise _error(f"'{item}' is not a whole number") from None
            continue
        start, end = _num(m.group(1), int), _num(m.group(2), int)
        if m.group(4) is not None:
            if max(abs(start), abs(end)) >= 2 ** 63:
                raise _error(f"'{item}': a number is too large")
            values += [int(x) for x in _linspace(item, float(start), float(end), int(m.group(4)))]
            continue
        step = _num(m.group(3), int) if m.group(3) is not None else 1
        if step == 0:
            raise _error(f"'{item}': the step cannot be 0")
        span = range(start, end + 1, step)
        _check_count(item, len(span) if abs(end - start) < 2 ** 62 else MAX_VALUES + 1)  # len() overflows past 2**63
        values += span
    return values


def parse_float_values(text: str) -> list[float]:
    """Items: `7.5`, `1-3` (step 1), `0.5-2.5 (+0.5)` (A1111: numpy.arange(start, end + step, step)), `1.0-2.0 [5]`
    (numpy.linspace). Values keep their float noise, as A1111's do; format_value rounds it away for labels."""
    values: list[float] = []
    for item in split_values(text):
        if not item:
            continue
        m = _FLOAT_RANGE.fullmatch(item)
        if m is None:
            try:
                value = float(item)
            except ValueError:
                raise _error(f"'{item}' is not a number") from None
            if not math.isfinite(value):
                raise _error(f"'{item}' is not a number")
            values.append(value)
            continue
        start, end = _num(m.group(1), float), _num(m.group(2), float)
        if m.group(4) is not None:
            if not (math.isfinite(start) and math.isfinite(end)):
                raise _error(f"'{item}': a number is too large")
            values += _linspace(item, start, end, int(m.group(4)))
            continue
        step = _num(m.group(3), float) if m.group(3) is not None else 1.0
        if not all(map(math.isfinite, (start, end, end + step))):
            raise _error(f"'{item}': a number is too large")
        if step == 0:
            raise _error(f"'{item}': the step cannot be 0")
        values += _arange(item, start, end + step, step)
    return values


def format_value(value, label: str | None = None) -> str:
    """A legend: A1111's format_value (floats rounded to 8 decimals, so 1.2000000000000002 reads 1.2) and, with a
    label, its format_value_add_label ("CFG Scale: 7.5")."""
    if type(value) is float:
        value = round(value, 8)
    return f"{label}: {value}" if label else f"{value}"
