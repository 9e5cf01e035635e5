"""X/Y/Z plot value syntax (webui/scripts/xyz_values.py) against A1111 1.10's scripts/xyz_grid.py.

Expected lists are worked out from A1111's code, quoted in the comments; the float ones are also checked against
numpy itself, which A1111 calls."""
from __future__ import annotations

import re

import numpy as np
import pytest

from webui.engine.errors import UserError
from webui.scripts.xyz_values import (format_value, parse_float_values, parse_int_values, parse_str_values,
                                      split_values)

# --- strings / CSV ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    # csv_string_to_list_strip: list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str)))))
    ("Euler a, DPM++ 2M , DDIM", ["Euler a", "DPM++ 2M", "DDIM"]),
    ('"a, b",c', ["a, b", "c"]),
    ('x,"say ""hi""",y', ["x", 'say "hi"', "y"]),
    # csv's default dialect: a quote after a space is an ordinary character, so this splits (as in A1111).
    ('a, "b, c"', ["a", '"b', 'c"']),
    ("one,two\nthree", ["one", "two", "three"]),  # every line is a row
    ("a,,b,", ["a", "", "b", ""]),  # empty items kept for strings (Prompt S/R may replace with nothing)
    ("", []),
    ("   ", [""]),
])
def test_str_values(text, expected):
    assert parse_str_values(text) == expected
    assert split_values(text) == expected


# --- ints ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("7", [7]),
    ("1, 2, 3", [1, 2, 3]),
    ("+5, -5", [5, -5]),
    # re_range; list(range(int(m.group(1)), int(m.group(2)) + 1, step)), step 1 by default
    ("1-5", [1, 2, 3, 4, 5]),
    ("  1 - 5  ", [1, 2, 3, 4, 5]),
    ("-5--2", [-5, -4, -3, -2]),
    ("-2-2", [-2, -1, 0, 1, 2]),
    ("3-3", [3]),
    # re_range with "(+2)": range(1, 11, 2)
    ("1-10 (+2)", [1, 3, 5, 7, 9]),
    ("1-10(+3)", [1, 4, 7, 10]),
    # range(10, 1 + 1, -3): A1111's end+1 bound also with a negative step, so 1 is never reached
    ("10-1 (-3)", [10, 7, 4]),
    ("5-1 (-1)", [5, 4, 3]),  # range(5, 2, -1)
    # re_range_count: [int(x) for x in np.linspace(start=1, stop=10, num=5)] = int(1, 3.25, 5.5, 7.75, 10)
    ("1-10 [5]", [1, 3, 5, 7, 10]),
    ("1-10 [1]", [1]),  # linspace(num=1) -> [start]
    ("1-3 [5]", [1, 1, 2, 2, 3]),  # 1, 1.5, 2, 2.5, 3 truncated
    ("10-1 [4]", [10, 7, 4, 1]),
    ("-5-5 [4]", [-5, -1, 1, 5]),  # -5, -1.67, 1.67, 5: int() truncates toward zero
    ("1-5, 20, 30-40 [3]", [1, 2, 3, 4, 5, 20, 30, 35, 40]),
    ("1, 2,", [1, 2]),  # a trailing comma is no value
    # Spellings A1111 rejects, read here: an unsigned step, a space after the sign.
    ("1-10 (2)", [1, 3, 5, 7, 9]),
    ("- 3-0", [-3, -2, -1, 0]),
])
def test_int_values(text, expected):
    assert parse_int_values(text) == expected
    assert all(type(v) is int for v in parse_int_values(text))


@pytest.mark.parametrize("text, message", [
    ("abc", "X/Y/Z plot: 'abc' is not a whole number"),
    ("7.5", "X/Y/Z plot: '7.5' is not a whole number"),  # A1111: int("7.5") fails too
    ("1, x, 3", "'x' is not a whole number"),
    ("1-10 [2.5]", "'1-10 [2.5]' is not a whole number"),
    ("5-1", "'5-1' gives no values"),  # A1111: range(5, 2) is silently empty
    ("1-5 [0]", "'1-5 [0]' gives no values"),
    ("1-5 (+0)", "the step cannot be 0"),  # A1111: range() raises ValueError
    ("1-100000000000", "gives more than 10000 values"),
    ("1-" + "9" * 40, "gives more than 10000 values"),
    ("1-" + "9" * 40 + " [3]", "too large"),
])
def test_int_errors(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_int_values(text)


# --- floats -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("7.5", [7.5]),
    ("7", [7.0]),
    ("5, 7.5, 10", [5.0, 7.5, 10.0]),
    ("-1.5", [-1.5]),
    ("1e-3", [0.001]),  # A1111's unescaped "." made this a range "1e" - "3" and a crash
    (".5", [0.5]),
    # re_range_float: np.arange(0.5, 2.5 + 0.5, 0.5)
    ("0.5-2.5 (+0.5)", [0.5, 1.0, 1.5, 2.0, 2.5]),
    # no step: step = 1 -> np.arange(1.0, 4.0, 1)
    ("1-3", [1.0, 2.0, 3.0]),
    ("2.5-0.5 (-0.5)", [2.5, 2.0, 1.5, 1.0, 0.5]),
    ("-1--0.5 (+0.25)", [-1.0, -0.75, -0.5]),
    # np.arange(1.0, 2.1, 0.1): ceil(1.1000000000000001 / 0.1) = 11 values, spaced by (1.0 + 0.1) - 1.0
    ("1-2 (+0.1)", [1.0, 1.1, 1.2000000000000002, 1.3000000000000003, 1.4000000000000004, 1.5000000000000004,
                    1.6000000000000005, 1.7000000000000006, 1.8000000000000007, 1.9000000000000008,
                    2.000000000000001]),
    # np.arange(0.1, 0.4, 0.1) has 4 values: A1111 plots 0.4 too.
    ("0.1-0.3 (+0.1)", [0.1, 0.2, 0.30000000000000004, 0.4]),
    # re_range_count_float: np.linspace(start=1.0, stop=2.0, num=5)
    ("1.0-2.0 [5]", [1.0, 1.25, 1.5, 1.75, 2.0]),
    ("0-1 [3]", [0.0, 0.5, 1.0]),
    ("3-3 [3]", [3.0, 3.0, 3.0]),
    ("2-1 [1]", [2.0]),
    ("7, 1-2 [2], 9", [7.0, 1.0, 2.0, 9.0]),
    ("4,,5,", [4.0, 5.0]),
    ("1-2 (0.5)", [1.0, 1.5, 2.0]),  # unsigned step: A1111 rejects it
])
def test_float_values(text, expected):
    assert parse_float_values(text) == expected
    assert all(type(v) is float for v in parse_float_values(text))


@pytest.mark.parametrize("start, end, step", [
    (0.5, 2.5, 0.5), (1, 2, 0.1), (0.1, 0.3, 0.1), (0, 1, 0.05), (7, 12, 0.3), (2.5, 0.5, -0.5), (-1, 1, 0.1),
    (0.0001, 0.001, 0.0001), (3, 30, 2.7), (1, 1.7, 0.7), (0.2, 1.1, 0.3), (10, 1, -0.9), (1, 2, 0.33),
])
def test_float_step_range_is_numpy_arange(start, end, step):
    # A1111: valslist_ext += np.arange(start, end + step, step).tolist()
    text = f"{start}-{end} ({'+' if step > 0 else ''}{step})"
    assert parse_float_values(text) == np.arange(float(start), float(end) + step, step).tolist()


@pytest.mark.parametrize("start, end, num", [(1, 2, 5), (0, 1, 7), (1, 10, 4), (0.1, 0.9, 9), (5, -5, 6),
                                             (7, 7, 2), (0.3, 0.7, 13), (1, 2, 2), (-2.5, 3.75, 11)])
def test_float_count_range_is_numpy_linspace(start, end, num):
    # A1111: valslist_ext += np.linspace(start=start, stop=end, num=num).tolist()
    assert parse_float_values(f"{start}-{end} [{num}]") == np.linspace(float(start), float(end), num).tolist()


@pytest.mark.parametrize("start, end, num", [(1, 10, 5), (-5, 5, 4), (1, 100, 7), (3, -8, 6), (0, 1, 9)])
def test_int_count_range_is_truncated_linspace(start, end, num):
    # A1111: valslist_ext += [int(x) for x in np.linspace(start=start, stop=end, num=num).tolist()]
    assert parse_int_values(f"{start}-{end} [{num}]") == [int(x) for x in np.linspace(start, end, num).tolist()]


@pytest.mark.parametrize("text, message", [
    ("abc", "X/Y/Z plot: 'abc' is not a number"),
    ("7.5, seven", "'seven' is not a number"),
    ("nan", "'nan' is not a number"),
    ("inf", "'inf' is not a number"),
    ("1-2-3", "'1-2-3' is not a number"),
    ("1-2 [2.5]", "'1-2 [2.5]' is not a number"),
    ("3-1", "'3-1' gives no values"),  # np.arange(3.0, 2.0, 1) is empty
    ("1-2 (+0)", "the step cannot be 0"),
    ("0-1000 (+0.01)", "gives more than 10000 values"),
    ("1-" + "9" * 400, "too large"),
])
def test_float_errors(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_float_values(text)


# --- labels -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, label, expected", [
    # format_value_add_label: if type(x) == float: x = round(x, 8); return f"{opt.label}: {x}"
    (7.5, "CFG Scale", "CFG Scale: 7.5"),
    (7.0, "CFG Scale", "CFG Scale: 7.0"),
    (1.2000000000000002, "CFG Scale", "CFG Scale: 1.2"),
    (0.30000000000000004, "Denoising", "Denoising: 0.3"),
    (1e-9, "Eta", "Eta: 0.0"),
    (20, "Steps", "Steps: 20"),
    # format_value: the value alone (Sampler, Prompt S/R)
    ("Euler a", None, "Euler a"),
    (2.000000000000001, None, "2.0"),
    (-1, None, "-1"),
])
def test_format_value(value, label, expected):
    assert format_value(value, label) == expected


def test_labels_of_a_parsed_axis():
    assert [format_value(v, "CFG Scale") for v in parse_float_values("1-2 (+0.25)")] == [
        "CFG Scale: 1.0", "CFG Scale: 1.25", "CFG Scale: 1.5", "CFG Scale: 1.75", "CFG Scale: 2.0"]
