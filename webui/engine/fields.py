"""Request-field metadata: each GenerationParams field is declared once, with `param(...)`.

Every edge reads the declarations instead of restating them: `validate()` and `schema()` here, the infotext
writer and reader (infotext.py), the CLI flags (webui/cli.py) and the UI sliders (webui/ui/common.py). The
generators walk `dataclasses.fields()` of the class they are given, so a subclass that adds one declared
field (a script, a test) is picked up everywhere without registering it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass

from .errors import UserError


class InvalidParams(UserError, ValueError):
    """A request field is out of range; the message names the field and the allowed range."""


@dataclass(frozen=True)
class Param:
    """What one request field means outside Python. None = not applicable."""
    label: str  # A1111's UI label
    noun: str  # the field's name in error messages ("steps must be between 1 and 150")
    help: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None  # the UI slider's step; only validated when `multiple_of` says so
    multiple_of: int | None = None
    choices: tuple | None = None  # the allowed values of a str field
    names: tuple | None = None  # an int/bool field coded as an index: the text of each value (infotext, CLI, UI)
    sentinel: object = None  # one value accepted outside the bounds (seed -1 = random)
    infotext: str | None = None  # the A1111 infotext key, when the field maps one to one onto it
    infotext_omit: tuple = ()  # values A1111 does not write (its default)
    cli: str | None = None  # the headless CLI flag
    cli_group: str | None = None  # None = the main options; "sampler"; "img2img" (img2img command only)
    ui_default: object = None  # A1111's UI value for a field whose default None means "not used"
    api: str | None = None  # the HTTP API's name for it (default: the field name)
    on_api: bool = True  # False: not a field of the HTTP API's requests (values the server fills in)
    api_default: object = None  # A1111's API default where it differs from the default (steps 50) …
    has_api_default: bool = False  # … set by `param(api_default=…)`, so that None can be one


_META_KEY = "gouache"


def param(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, label: str, noun: str | None = None,
          **spec) -> dataclasses.Field:
    """A dataclass field with its metadata (see Param). `noun` defaults to the label with a lower-case first
    letter unless the label starts with an acronym ("CFG scale")."""
    if noun is None:
        noun = label[:1].lower() + label[1:] if label[1:2].islower() else label
    for key in ("choices", "names", "infotext_omit"):  # tuples: a Param is immutable and hashable
        if spec.get(key) is not None:
            spec[key] = tuple(spec[key])
    if "api_default" in spec:
        spec["has_api_default"] = True
    meta = {_META_KEY: Param(label=label, noun=noun, **spec)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


@dataclass(frozen=True)
class Declared:
    """One declared field of a class: the dataclass Field, its Param, and its value type without None."""
    field: dataclasses.Field
    spec: Param
    kind: type  # int, float, str, bool, dict or list
    nullable: bool

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def default(self):
        f = self.field
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    @property
    def api_default(self):
        """What the HTTP API assumes when a request leaves the field out (A1111's API defaults)."""
        return self.spec.api_default if self.spec.has_api_default else self.default

    @property
    def value_default(self):
        """The value a control or flag starts at: the default, else A1111's UI default."""
        return self.spec.ui_default if self.default is None else self.default

    def bounds(self) -> tuple:
        """(minimum, maximum); an int field coded by `names` is bounded by them. Floats for a float field,
        so messages read "between 0.0 and 1.0" as they always have."""
        lo, hi = self.spec.minimum, self.spec.maximum
        if self.spec.names is not None and self.kind is int:
            lo, hi = 0, len(self.spec.names) - 1
        if self.kind is float:
            lo, hi = (None if b is None else float(b) for b in (lo, hi))
        return lo, hi


def _kind(annotation) -> tuple[type, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return _kind(kinds[0])[0], type(None) in args
    return typing.get_origin(annotation) or annotation, False


@functools.cache
def declared(cls) -> tuple[Declared, ...]:
    """The fields of `cls` declared with `param`, in declaration order (base class fields first)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_META_KEY)
        if spec is not None:
            out.append(Declared(f, spec, *_kind(hints[f.name])))
    return tuple(out)


def declared_field(cls, name: str) -> Declared:
    for d in declared(cls):
        if d.name == name:
            return d
    raise KeyError(f"{cls.__name__} has no declared field {name!r}")


def _range_error(d: Declared, value) -> str | None:
    spec, (lo, hi) = d.spec, d.bounds()
    if d.kind is float and not math.isfinite(value):  # NaN passes every comparison; inf is never meant
        return f"{spec.noun} must be a finite number, got {value}"
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.noun} must be one of {', '.join(map(str, spec.choices))}; got {value!r}"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            return f"{spec.noun} must be between {lo} and {hi}, got {value}"
        return f"{spec.noun} must be at least {lo}, got {value}" if hi is None else \
            f"{spec.noun} must be at most {hi}, got {value}"
    if spec.multiple_of and value % spec.multiple_of:
        return f"{spec.noun} must be a multiple of {spec.multiple_of}, got {value}"
    return None


def value_error(cls, name: str, value) -> str | None:
    """Why `value` is not acceptable for field `name` of `cls` (None: it is, or the field declares nothing)."""
    for d in declared(cls):
        if d.name == name:
            if value is None or d.kind is bool or (d.spec.sentinel is not None and value == d.spec.sentinel):
                return None
            return _range_error(d, value)
    return None


def validate(obj) -> None:
    """Check every declared field of `obj` against its bounds, choices and multiple; None = unset, skipped.
    Raises InvalidParams naming the first bad field."""
    for d in declared(type(obj)):
        value = getattr(obj, d.name)
        if value is None or d.kind is bool or (d.spec.sentinel is not None and value == d.spec.sentinel):
            continue
        message = _range_error(d, value)
        if message:
            raise InvalidParams(message)


_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array"}


def schema(cls) -> dict:
    """{field name: its description} for API clients and generated forms; JSON-serialisable."""
    out = {}
    for d in declared(cls):
        spec, (lo, hi) = d.spec, d.bounds()
        out[d.name] = {
            "type": _JSON_TYPES.get(d.kind, "string"), "nullable": d.nullable, "default": d.default,
            "ui_default": spec.ui_default, "minimum": lo, "maximum": hi, "multiple_of": spec.multiple_of,
            "sentinel": spec.sentinel, "choices": None if spec.choices is None else list(spec.choices),
            "names": None if spec.names is None else list(spec.names), "label": spec.label, "help": spec.help,
            "api": (spec.api or d.name) if spec.on_api else None, "api_default": d.api_default,
            "infotext": spec.infotext, "cli": spec.cli,
        }
    return out
