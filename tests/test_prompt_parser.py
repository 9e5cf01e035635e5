"""webui.engine.prompts.parser against A1111 1.10.1's prompt language (modules/prompt_parser.py, extra_networks.py).

Expected values are A1111's outputs: the examples of its docstrings and comments, and results of its functions
(lark 1.1.2 for the editing grammar) on the other inputs, written here as tables. Weights are compared exactly
where the test is about A1111's float rounding, with pytest.approx elsewhere.
"""
from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webui.engine.prompts.parser import (
    ExtraNetworkTag,
    extract_extra_networks,
    get_prompt_schedules,
    parse_prompt_attention,
    parse_scheduled,
    split_and,
)

R = 1.1
S = 1 / 1.1


def approx_pairs(expected):
    return [(text, pytest.approx(weight)) for text, weight in expected]


# ---------------------------------------------------------------------------------------------------------------
# Emphasis
# ---------------------------------------------------------------------------------------------------------------

# A1111's docstring for parse_prompt_attention, verbatim (weights printed there to full precision).
A1111_ATTENTION_DOCSTRING = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), A1111_ATTENTION_DOCSTRING)
def test_attention_a1111_docstring_exact(text, expected):
    assert parse_prompt_attention(text) == expected


ATTENTION = [
    # basics
    ("a (b:1.5) [c] ((d))", [("a ", 1.0), ("b", 1.5), (" ", 1.0), ("c", S), (" ", 1.0), ("d", 1.21)]),
    ("(x)", [("x", R)]),
    ("[x]", [("x", S)]),
    ("[[x]]", [("x", S * S)]),
    ("(x:1.3)", [("x", 1.3)]),
    ("(x: 1.3 )", [("x", 1.3)]),
    ("(x:0.5) y", [("x", 0.5), (" y", 1.0)]),
    ("(x:-1.5)", [("x", -1.5)]),
    ("(x:+2)", [("x", 2.0)]),
    ("(x:.5)", [("x", 0.5)]),
    ("(x:2.)", [("x", 2.0)]),
    ("(x:0)", [("x", 0.0)]),
    ("((a:1.2))", [("a", 1.32)]),
    ("((a):1.2)", [("a", 1.32)]),
    ("(a [b] c)", [("a ", R), ("b", 1.0), (" c", R)]),
    ("[(a]b)", [("a", 1.0), ("b", R)]),  # ']' closes the open '[' although '(' opened after it
    # unbalanced: open brackets run to the end, stray closers are text
    ("(x:1.3", [("x:1.3", R)]),
    ("a (b", [("a ", 1.0), ("b", R)]),
    ("a [b", [("a ", 1.0), ("b", S)]),
    ("((a", [("a", 1.21)]),
    ("a) b", [("a) b", 1.0)]),
    ("a] b", [("a] b", 1.0)]),
    ("a:1.3) b", [("a:1.3) b", 1.0)]),  # a weight with no '(' open is text, spaces and all
    ("(a))", [("a", R), (")", 1.0)]),
    ("())", [(")", 1.0)]),
    (")(", [(")", 1.0)]),
    ("(a:b)", [("a:b", R)]),
    ("(a:1:2)", [("a:1", 2.0)]),
    ("a:b", [("a:b", 1.0)]),
    # escapes
    ("\\(a\\)", [("(a)", 1.0)]),
    ("\\[a\\]", [("[a]", 1.0)]),
    ("\\\\", [("\\", 1.0)]),
    ("\\\\(a)", [("\\", 1.0), ("a", R)]),
    ("(\\(a\\))", [("(a)", R)]),
    ("a\\b", [("ab", 1.0)]),  # any other backslash is dropped
    ("a\\", [("a", 1.0)]),
    ("(a)\\", [("a", R), ("", 1.0)]),  # ... but still leaves an empty entry behind
    ("\\:", [(":", 1.0)]),
    # empty
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("[]()", [("", 1.0)]),
    ("(", [("", 1.0)]),
    # non-Latin
    ("(日本:1.2) 😀", [("日本", 1.2), (" 😀", 1.0)]),
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION)
def test_attention_table(text, expected):
    assert parse_prompt_attention(text) == approx_pairs(expected)


BREAKS = [
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a  BREAK\n b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("a BREAKb", [("a BREAKb", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("a_BREAK", [("a_BREAK", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]),
    ("(a) BREAK b", [("a", R), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a:BREAK", [("a:", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("\\(BREAK\\)", [("(", 1.0), ("BREAK", -1.0), (")", 1.0)]),
    # inside brackets the BREAK entry is weighted like text (A1111 then treats it as the word, not a break)
    ("(a BREAK b)", [("a", R), ("BREAK", -R), ("b", R)]),
    ("[BREAK]", [("", S), ("BREAK", -S), ("", S)]),
]


@pytest.mark.parametrize(("text", "expected"), BREAKS)
def test_attention_break(text, expected):
    assert parse_prompt_attention(text) == approx_pairs(expected)


def test_attention_break_weight_is_minus_one_exactly():
    (_, (text, weight), _) = parse_prompt_attention("a BREAK b")
    assert text == "BREAK" and weight == -1 and isinstance(weight, float)


EXACT_ORDER = [
    # A1111 multiplies from the innermost bracket out (closing order): ((1.1*1.1)*2.3), not 2.3*1.1*1.1
    ("(((x:1.1):1.1):2.3)", 2.7830000000000004),
    # brackets left open apply after the closed ones, round before square: (2.3*1.1)/1.1 == 2.3 exactly
    ("[((x:2.3)", 2.3),
    ("[((x:3.1)", 3.1000000000000005),
    ("[(x:2.3)(", 2.090909090909091),
    ("[[(x:1.3)", 1.0743801652892562),
]


@pytest.mark.parametrize(("text", "weight"), EXACT_ORDER)
def test_attention_float_rounding_matches_a1111(text, weight):
    assert parse_prompt_attention(text) == [("x", weight)]


def test_attention_merges_equal_neighbours_only():
    assert parse_prompt_attention("(a)(b)[c][d]") == [("ab", R), ("cd", S)]
    assert parse_prompt_attention("a(b:1)c") == [("abc", 1.0)]
    assert parse_prompt_attention("(a)b(c)") == approx_pairs([("a", R), ("b", 1.0), ("c", R)])


def test_attention_unparseable_weight_does_not_raise():
    # A1111 raises ValueError on float("1.2.3"); here the ':' is text and the bracket closes with 1.1
    assert parse_prompt_attention("(a:1.2.3)") == [("a:1.2.3", R)]
    assert parse_prompt_attention("(a:.)") == [("a:.", R)]
    assert parse_prompt_attention("a:1.2.3)") == [("a:1.2.3)", 1.0)]  # nothing open: text, as in A1111


def test_attention_huge_weight():
    ((text, weight),) = parse_prompt_attention("(a:" + "9" * 400 + ")")
    assert text == "a" and weight == float("inf")


# ---------------------------------------------------------------------------------------------------------------
# Prompt editing and alternation
# ---------------------------------------------------------------------------------------------------------------


def g(prompt, steps=10):
    return [list(x) for x in parse_scheduled(prompt, steps)]


# A1111's docstring for get_learned_conditioning_prompt_schedules (steps=10, no hires).
A1111_SCHEDULE_DOCSTRING = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[1, "a"], [2, "(b:1.1)"], [3, "a"], [4, "(b:1.1)"], [5, "a"], [6, "(b:1.1)"], [7, "a"],
                     [8, "(b:1.1)"], [9, "a"], [10, "(b:1.1)"]]),
    ("[fe|]male", [[1, "female"], [2, "male"], [3, "female"], [4, "male"], [5, "female"], [6, "male"],
                   [7, "female"], [8, "male"], [9, "female"], [10, "male"]]),
    ("[fe|||]male", [[1, "female"], [2, "male"], [3, "male"], [4, "male"], [5, "female"], [6, "male"],
                     [7, "male"], [8, "male"], [9, "female"], [10, "male"]]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_SCHEDULE_DOCSTRING)
def test_schedule_a1111_docstring(prompt, expected):
    assert g(prompt) == expected


def test_schedule_a1111_stale_docstring_example_follows_a1111_behaviour():
    # A1111's docstring says "a [{b|d{:.5] c" -> [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this right now"),
    # but with the grammar of 1.10 and lark 1.1.2 the '|' makes the prompt unparseable and it is used as it is.
    assert g("a [{b|d{:.5] c") == [[10, "a [{b|d{:.5] c"]]


def test_schedule_a1111_comment_example():
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
              "[ in background:0.25] [shoddy:masterful:0.5]")
    assert g(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


SCHEDULES = [
    # [from:to:when], [to:when], [from::when]
    ("a [b:c:5] d", 10, [[5, "a b d"], [10, "a c d"]]),
    ("a [b:5] d", 10, [[5, "a  d"], [10, "a b d"]]),
    ("a [b::5] d", 10, [[5, "a b d"], [10, "a  d"]]),
    ("[a:b:3]x[c:d:7]", 10, [[3, "axc"], [7, "bxc"], [10, "bxd"]]),
    # when: a '.' makes it a fraction of the steps (int(f*steps)), otherwise a step; clipped to steps
    ("a [b:c:0.5] d", 10, [[5, "a b d"], [10, "a c d"]]),
    ("a [b:c:0.5] d", 7, [[3, "a b d"], [7, "a c d"]]),
    ("[b:c:0.25]", 20, [[5, "b"], [20, "c"]]),
    ("[a:b:0.99]", 10, [[9, "a"], [10, "b"]]),
    ("[a:b:0.05]", 10, [[10, "b"]]),
    ("[a:b:2.5e-1]", 8, [[2, "a"], [8, "b"]]),
    ("[a:b:1.]", 10, [[10, "a"]]),  # 1.0 of the steps
    ("[a:b:1e1]", 10, [[10, "a"]]),  # no '.', so step 10
    ("[a:b:20]", 10, [[10, "a"]]),
    ("[a:b:0]", 10, [[10, "b"]]),
    ("[a:b:-3]", 10, [[10, "b"]]),
    ("[a:b:+3]", 10, [[3, "a"], [10, "b"]]),
    ("[a:b: 3 ]", 10, [[3, "a"], [10, "b"]]),
    ("[a:b:3 ]", 10, [[3, "a"], [10, "b"]]),
    # alternation: options[(step - 1) % n], every step
    ("[a|b]", 4, [[1, "a"], [2, "b"], [3, "a"], [4, "b"]]),
    ("[a|b|c] x", 5, [[1, "a x"], [2, "b x"], [3, "c x"], [4, "a x"], [5, "b x"]]),
    ("[a|b]", 1, [[1, "a"]]),
    ("[|]", 3, [[1, ""], [2, ""], [3, ""]]),
    # nesting
    ("[a:[b|c]:2]", 4, [[1, "a"], [2, "a"], [3, "b"], [4, "c"]]),
    ("[[a|b]:c:2]", 4, [[1, "a"], [2, "b"], [3, "c"], [4, "c"]]),
    ("[a|[b|c]]", 4, [[1, "a"], [2, "c"], [3, "a"], [4, "c"]]),
    ("[a [b:3]:5]", 10, [[3, ""], [5, ""], [10, "a b"]]),
    ("[a:[b:c:1]:0.5] [d|e]", 4, [[1, "a d"], [2, "a e"], [3, "c d"], [4, "c e"]]),
    # emphasis brackets and escapes stay in the text
    ("(a [b:c:3])", 10, [[3, "(a b)"], [10, "(a c)"]]),
    ("((a:1.2) [b:c:0.3]:1.1)", 10, [[3, "((a:1.2) b:1.1)"], [10, "((a:1.2) c:1.1)"]]),
    ("[a\\:b:c:3]", 10, [[3, "a\\:b"], [10, "c"]]),
    ("[a:b\\|c:3]", 10, [[3, "a"], [10, "b\\|c"]]),
    ("\\[a:b:3\\]", 10, [[10, "\\[a:b:3\\]"]]),
    # stray brackets and colons outside constructs are text
    ("a]) [b:c:2]", 10, [[2, "a]) b"], [10, "a]) c"]]),
    ("[[a:b:2]", 10, [[2, "[a"], [10, "[b"]]),
    ("(a:1.2", 10, [[10, "(a:1.2"]]),
    ("[]", 10, [[10, "[]"]]),
    ("[:]", 10, [[10, "[:]"]]),
    ("[a:b:c:3]", 10, [[10, "[a:b:c:3]"]]),
    ("[a:b]", 10, [[10, "[a:b]"]]),
    ("[a:b:x]", 10, [[10, "[a:b:x]"]]),
    ("[a:b|c:3]", 10, [[10, "[a:b|c:3]"]]),
    ("[a:b:[1]]", 10, [[10, "[a:b:[1]]"]]),
    ("", 10, [[10, ""]]),
    ("ÄÖ [ß:日本:2] 😀", 4, [[2, "ÄÖ ß 😀"], [4, "ÄÖ 日本 😀"]]),
    ("a [b:c:2] <lora:x:1>", 4, [[2, "a b <lora:x:1>"], [4, "a c <lora:x:1>"]]),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), SCHEDULES)
def test_schedule_table(prompt, steps, expected):
    assert g(prompt, steps) == expected


MALFORMED = [
    "a|b",  # '|' outside an alternation
    "[a|b",
    "a [b|c] d|e",
    "[(a|b)]",  # '|' inside round brackets
    "(a|b)",
    "a\\",  # backslash at the end
    "a\\\nb [c:d:2]",  # backslash before a newline
    "[a:b:3] |",
]


@pytest.mark.parametrize("prompt", MALFORMED)
def test_schedule_unparseable_prompt_is_used_as_is(prompt):
    assert parse_scheduled(prompt, 10) == [(10, prompt)]


def test_schedule_infinite_when_does_not_raise():
    # A1111 raises OverflowError (int(inf)); +inf is clipped to the steps, -inf never switches
    assert g("[a:b:1e999]", 10) == [[10, "a"]]
    assert g("[a:b:-1e999]", 10) == [[10, "b"]]
    assert g("[a:b:1.5e308]", 10) == [[10, "a"]]


def test_schedule_ambiguous_prompt_reads_constructs():
    # lark can read "[a:b:3]]" as an edit plus a stray ']' or as plain text; which it picks depends on Python's
    # hash seed, so A1111 is not deterministic here. Every well-formed construct is read as one.
    assert g("[a:b:3]]") == [[3, "a]"], [10, "b]"]]
    assert g("[a:3]:4]") == [[3, ":4]"], [10, "a:4]"]]


def test_get_prompt_schedules_per_prompt():
    prompts = ["a [b:c:2]", "x", "a [b:c:2]", "[p|q]"]
    assert get_prompt_schedules(prompts, 3) == [
        [(2, "a b"), (3, "a c")],
        [(3, "x")],
        [(2, "a b"), (3, "a c")],
        [(1, "p"), (2, "q"), (3, "p")],
    ]
    assert get_prompt_schedules([], 5) == []


def test_schedule_steps_edge_cases():
    assert parse_scheduled("[a:b:1]", 1) == [(1, "a")]
    assert parse_scheduled("[a|b] [c:d:1]", 0) == [(0, "b c")]  # A1111: only the end step, (0-1) % 2 == 1


# ---------------------------------------------------------------------------------------------------------------
# AND
# ---------------------------------------------------------------------------------------------------------------

AND = [
    ("a", [("a", 1.0)]),
    ("a AND b", [("a", 1.0), (" b", 1.0)]),
    ("a AND b:0.5", [("a", 1.0), (" b", 0.5)]),
    ("a AND b :  -0.5  ", [("a", 1.0), (" b", -0.5)]),
    ("a:1.5", [("a", 1.5)]),
    ("a: 1.5 AND b", [("a", 1.5), (" b", 1.0)]),
    ("a AND b AND c:2", [("a", 1.0), (" b", 1.0), (" c", 2.0)]),
    ("ANDROID AND x", [("ANDROID", 1.0), (" x", 1.0)]),
    ("a ANDb", [("a ANDb", 1.0)]),
    ("a and b", [("a and b", 1.0)]),
    ("a AND", [("a", 1.0), ("", 1.0)]),
    ("AND", [("", 1.0), ("", 1.0)]),
    ("a:b AND c:", [("a:b", 1.0), (" c:", 1.0)]),
    ("a:+.5", [("a", 0.5)]),
    ("a :2.", [("a", 2.0)]),
    ("a:1.2.3", [("a:1.2.3", 1.0)]),
    ("  a  ", [("  a", 1.0)]),
    ("a AND\tb:3\n", [("a", 1.0), ("\tb", 3.0)]),
    ("(x:1.2) AND [y:z:0.5]:0.7", [("(x:1.2)", 1.0), (" [y:z:0.5]", 0.7)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), AND)
def test_split_and(prompt, expected):
    assert split_and(prompt) == approx_pairs(expected)


# ---------------------------------------------------------------------------------------------------------------
# Extra networks
# ---------------------------------------------------------------------------------------------------------------

EXTRA = [
    ("a <lora:foo:0.8> b", "a  b", [ExtraNetworkTag("lora", ("foo", "0.8"))]),
    ("<lora:foo:te=0.5:unet=1>", "", [ExtraNetworkTag("lora", ("foo", "te=0.5", "unet=1"))]),
    ("<lora:a:-0.5>, x <lora:b:1.2>,<hypernet:h:0.3>", ", x ,",
     [ExtraNetworkTag("lora", ("a", "-0.5")), ExtraNetworkTag("lora", ("b", "1.2")),
      ExtraNetworkTag("hypernet", ("h", "0.3"))]),
    ("<lora:name with spaces>", "", [ExtraNetworkTag("lora", ("name with spaces",))]),
    ("<lora:a::1>", "", [ExtraNetworkTag("lora", ("a", "", "1"))]),
    ("(<lora:a:1>:1.2)", "(:1.2)", [ExtraNetworkTag("lora", ("a", "1"))]),
    ("<lora:a<lora:b:1>", "", [ExtraNetworkTag("lora", ("a<lora", "b", "1"))]),
    ("<lo-ra:a:1>", "<lo-ra:a:1>", []),
    ("<lora:>", "<lora:>", []),
    ("<lora>", "<lora>", []),
    ("<:a>", "<:a>", []),
    ("<lora:a", "<lora:a", []),
    ("a > b < c", "a > b < c", []),
    ("<ロラ:名前:1>", "", [ExtraNetworkTag("ロラ", ("名前", "1"))]),
    ("", "", []),
]


@pytest.mark.parametrize(("prompt", "text", "tags"), EXTRA)
def test_extract_extra_networks(prompt, text, tags):
    assert extract_extra_networks(prompt) == (text, tags)


def test_extra_network_tag_arguments():
    tag = ExtraNetworkTag("lora", ("foo", "te=0.5", "unet=1", "a=b=c"))
    assert tag.positional == ("foo", "a=b=c")
    assert tag.named == {"te": "0.5", "unet": "1"}
    with pytest.raises(AttributeError):
        tag.kind = "x"  # frozen
    assert hash(tag) == hash(ExtraNetworkTag("lora", ("foo", "te=0.5", "unet=1", "a=b=c")))


# ---------------------------------------------------------------------------------------------------------------
# Robustness and speed
# ---------------------------------------------------------------------------------------------------------------

PATHOLOGICAL = [
    "[" * 5000,
    "(" * 20000,
    "(a" * 10000,
    "([a" * 6666,
    "a)" * 10000,
    "(" * 10000 + "a" + ")" * 10000,
    "(" * 5000 + "a" + ":1.01)" * 5000,
    "[" * 3000 + "a" + ":b:3]" * 3000,
    "[" * 3000 + "a" + "|b]" * 3000,
    "|" * 20000,
    ":" * 20000,
    "\\" * 20001,
    " " * 20000 + ":1",
    " " * 10000 + "BREAK" + " " * 10000,
    "<lora:" * 4000,
    "a AND " * 4000,
]


@pytest.mark.parametrize("prompt", PATHOLOGICAL, ids=lambda p: f"{p[:12]!r}x{len(p)}")
def test_pathological_inputs_are_handled_quickly(prompt):
    start = time.perf_counter()
    parse_prompt_attention(prompt)
    parse_scheduled(prompt, 30)
    split_and(prompt)
    extract_extra_networks(prompt)
    # catastrophic backtracking takes minutes; a generous bound keeps a slow, busy CI machine from failing it
    assert time.perf_counter() - start < 10.0


def test_deep_nesting_results():
    deep = "[" * 5000 + "a"
    assert parse_scheduled(deep, 10) == [(10, deep)]
    assert parse_prompt_attention(deep) == [("a", pytest.approx(S ** 5000, rel=1e-6))]
    nested = "[" * 3000 + "a" + ":b:3]" * 3000
    assert [step for step, _ in parse_scheduled(nested, 10)] == [3, 10]
    assert parse_scheduled(nested, 10)[0][1] == "a"
    assert parse_scheduled(nested, 10)[1][1] == "b"


def test_long_realistic_prompt_is_fast():
    unit = ("masterpiece, (best quality:1.2), [ugly], a [cat:dog:0.5] on a [red|blue] mat, \\(x\\) BREAK "
            "<lora:style:0.7> AND ")
    prompt = (unit * (20000 // len(unit) + 1))[:20000]
    start = time.perf_counter()
    text, _ = extract_extra_networks(prompt)
    for part, _ in split_and(text):
        for _, step_text in parse_scheduled(part, 30):
            parse_prompt_attention(step_text)
    parse_prompt_attention(prompt)
    parse_scheduled(prompt, 30)
    assert time.perf_counter() - start < 1.0


SYNTAX_TEXT = st.lists(
    st.one_of(
        st.sampled_from(list("()[]:|\\<>=.,-+ 0123456789abAB\n\t")),
        st.sampled_from(["BREAK", "AND", " BREAK ", " AND ", "<lora:x:0.5>", "[a:b:2]", "[a|b]", "(c:1.3)",
                         "\\(", ":0.5)", "1e5", "0.5"]),
        st.characters(),
    ),
    max_size=40,
).map("".join)

PLAIN_TEXT = st.lists(
    st.one_of(st.characters(blacklist_characters="()[]\\"), st.sampled_from(["BREAK", " BREAK ", ":", " "])),
    max_size=40,
).map("".join)

HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(st.one_of(SYNTAX_TEXT, st.text()))
def test_never_raises(text):
    attention = parse_prompt_attention(text)
    assert attention and all(isinstance(t, str) and isinstance(w, float) for t, w in attention)
    for steps in (1, 7):
        schedule = parse_scheduled(text, steps)
        assert schedule and all(isinstance(t, str) for _, t in schedule)
    parts = split_and(text)
    assert parts and all(isinstance(w, float) for _, w in parts)
    stripped, tags = extract_extra_networks(text)
    assert len(stripped) <= len(text) and all(isinstance(tag, ExtraNetworkTag) for tag in tags)


@HYPOTHESIS
@given(SYNTAX_TEXT.filter(lambda t: not re.search(r":\s*[+-]?[.\d]", t)))
def test_attention_weights_positive_or_break(text):
    # without an explicit weight every weight is a product of 1.1 and 1/1.1: positive, or negative for BREAK
    for piece, weight in parse_prompt_attention(text):
        assert weight > 0 or (piece == "BREAK" and weight < 0)


@HYPOTHESIS
@given(PLAIN_TEXT)
def test_attention_without_brackets_keeps_the_text(text):
    result = parse_prompt_attention(text)
    assert all(weight in (1.0, -1.0) for _, weight in result)
    assert "".join(piece for piece, _ in result) == re.sub(r"\s*\bBREAK\b\s*", "BREAK", text)
    assert sum(1 for piece, w in result if w == -1.0 and piece == "BREAK") == len(re.findall(r"\bBREAK\b", text))


@HYPOTHESIS
@given(SYNTAX_TEXT)
def test_attention_text_is_the_input_minus_syntax(text):
    # every character of the output comes from the input, in order (syntax is only ever removed)
    joined = "".join(piece for piece, w in parse_prompt_attention(text) if not (piece == "BREAK" and w < 0))
    it = iter(text)
    assert all(char in it for char in joined)


@HYPOTHESIS
@given(SYNTAX_TEXT, st.integers(min_value=1, max_value=40))
def test_schedule_steps_strictly_increase_to_steps(text, steps):
    schedule = parse_scheduled(text, steps)
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends)) and ends[-1] == steps and ends[0] >= 1
    assert get_prompt_schedules([text, text], steps) == [schedule, schedule]


@HYPOTHESIS
@given(st.text(alphabet=st.characters(blacklist_characters="()[]:|\\"), max_size=60), st.integers(1, 40))
def test_schedule_without_syntax_is_the_text(text, steps):
    assert parse_scheduled(text, steps) == [(steps, text)]


@HYPOTHESIS
@given(SYNTAX_TEXT)
def test_split_and_parts_cover_the_text(text):
    parts = split_and(text)
    assert len(parts) == len(re.findall(r"\bAND\b", text)) + 1
    for (piece, _), source in zip(parts, re.split(r"\bAND\b", text)):
        assert source.startswith(piece)
