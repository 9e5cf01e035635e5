"""`/sdapi/v1/options`: the settings under A1111's option names (Settings uses them), plus the checkpoint
(`sd_model_checkpoint`) and its hash. POST takes any subset, or the whole dict GET returned (Open WebUI posts it
back with a new checkpoint): every value is checked before anything changes, so a bad one stores nothing."""
from __future__ import annotations

import dataclasses
import logging

from ..engine.manager import PipelineManager
from ..engine.settings import Settings
from ..engine.settings_file import coerce_settings

log = logging.getLogger("webui.api")

CHECKPOINT_KEY = "sd_model_checkpoint"
READ_ONLY = ("sd_checkpoint_hash",)  # GET reports them; POSTed back, they are ignored quietly


class BadOption(ValueError):
    pass


def checkpoint_title(manager: PipelineManager) -> str | None:
    """A1111's "name [short hash]" of the checkpoint jobs use when they name none."""
    if manager.current is not None and (manager.selected is None or manager.selected == manager.current.info):
        return manager.current.title
    info = manager.selected
    if info is None:
        return None
    sha = manager.hashes.cached(info.path)
    return f"{info.name} [{sha[:10]}]" if sha else info.name


def get_options(manager: PipelineManager) -> dict:
    out = dataclasses.asdict(manager.settings)
    out[CHECKPOINT_KEY] = checkpoint_title(manager)
    current = manager.current
    out["sd_checkpoint_hash"] = current.sha256 if current is not None else None
    return out


def set_options(manager: PipelineManager, data: dict) -> list[str]:
    """Apply the options; returns the ignored keys. Raises BadOption (nothing stored) for a bad value, and the
    manager's UserError for a checkpoint that cannot be found or loaded (nothing stored either)."""
    if not isinstance(data, dict):
        raise BadOption("options must be a JSON object of option names and values")
    known = {f.name for f in dataclasses.fields(Settings)}
    ignored = sorted(k for k in data if k not in known and k != CHECKPOINT_KEY and k not in READ_ONLY)
    if ignored:
        log.warning("options not known here, ignored: %s", ", ".join(ignored))
    try:
        values = coerce_settings({k: v for k, v in data.items() if k in known})
    except ValueError as e:
        raise BadOption(str(e)) from None
    checkpoint = data.get(CHECKPOINT_KEY)
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise BadOption(f"{CHECKPOINT_KEY} must be a checkpoint title or name, got {checkpoint!r}")
    if checkpoint and checkpoint != checkpoint_title(manager):
        manager.select(checkpoint)
    changed = {k: v for k, v in values.items() if getattr(manager.settings, k) != v}
    if changed:
        manager.update_settings(**changed)
    return ignored
