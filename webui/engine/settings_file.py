"""config.json: the settings as A1111 stores them (one JSON object, A1111's option names), read at start and
written atomically after every change, so a crash mid-write never leaves a half-written file. Keys this version
does not know (an A1111 config.json copied over, a newer version's) are kept and written back untouched; a stored
value that is out of range is reported and replaced by the default, never used."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path

from .fields import value_error
from .settings import Settings

log = logging.getLogger(__name__)


def _coerce(field: dataclasses.Field, value):
    """The JSON value as the field's type, or raise ValueError."""
    kind = {"int": int, "float": float, "bool": bool, "str": str, "list[str]": list}.get(str(field.type), None)
    if kind is list:  # quicksettings_list and the like: A1111 stores a JSON list of names
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{field.name} must be a list of names, got {value!r}")
        return list(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{field.name} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ValueError(f"{field.name} must be a whole number, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{field.name} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{field.name} must be text, got {value!r}")
    return value


def coerce_settings(values: dict) -> dict:
    """{name: value} for known settings, each converted to its field's type and checked against its bounds;
    raises ValueError naming the first bad one. Unknown names are the caller's concern."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out = {}
    for name, value in values.items():
        if name in fields:
            out[name] = _coerce(fields[name], value)
            message = value_error(Settings, name, out[name])
            if message:
                raise ValueError(f"{name}: {message}")  # the key, for an API client; the label's words, for a person
    return out


def read(path: Path) -> tuple[Settings, dict]:
    """(the settings in the file over the defaults, the file's other keys). A missing file is all defaults; an
    unreadable one is reported and ignored (it is left as it is until the next change is saved)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return Settings(), {}
    except (OSError, ValueError) as e:
        kept = _set_aside(Path(path))
        log.warning("ignoring %s: %s%s", path, e, f"; kept as {kept.name}" if kept else "")
        return Settings(), {}
    known = {f.name for f in dataclasses.fields(Settings)}
    good = {}
    for name, value in data.items():
        if name in known:
            try:
                good.update(coerce_settings({name: value}))
            except ValueError as e:
                log.warning("%s: %s; using the default", path, e)
    return Settings(**good), {k: v for k, v in data.items() if k not in known}


def _set_aside(path: Path) -> Path | None:
    """Move an unreadable config.json out of the way (config.json.corrupt-N), so the next save does not
    overwrite what the user may want to recover."""
    for n in range(1, 1000):
        target = path.with_name(f"{path.name}.corrupt-{n}")
        if not target.exists():
            try:
                os.replace(path, target)
            except OSError:
                return None
            return target
    return None


def write(path: Path, settings: Settings, other: dict) -> None:
    """The settings and the other keys, written to a temporary file and renamed over the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**other, **dataclasses.asdict(settings)}
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
