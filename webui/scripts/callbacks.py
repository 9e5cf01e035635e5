"""A1111's script callbacks (modules/script_callbacks.py): functions extensions register at import time, called at
fixed points of the app's life. Same names and parameter objects as A1111, so an A1111 extension's
`script_callbacks.on_…(fn)` lines work unchanged.

A callback that raises is logged and reported (`errors`), never fatal: one broken extension must not stop the
server or another extension. Each registration remembers the script file that made it, so disabling an
extension or reloading its scripts removes exactly its callbacks."""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("webui.scripts")

NAMES = ("app_started", "model_loaded", "ui_tabs", "ui_settings", "before_image_saved", "image_saved",
         "cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "infotext_pasted", "before_ui", "script_unloaded")


@dataclass
class Registered:
    fn: Callable
    script: str | None  # the script file that registered it (None: registered outside a script import)


_registry: dict[str, list[Registered]] = defaultdict(list)
current_script: list[str] = []  # set by the extension loader while it imports a script file
errors: list[str] = []  # one line per failed callback, shown in the Extensions tab


@dataclass
class ImageSaveParams:
    """on_before_image_saved / on_image_saved: `image` and `pnginfo["parameters"]` may be replaced before the
    save; `filename` is the path written (set for on_image_saved)."""
    image: Any
    p: Any
    filename: str | None
    pnginfo: dict


@dataclass
class CFGDenoiserParams:
    """Before the model call: x, image_cond, sigma, text_cond, text_uncond may be replaced."""
    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """After the model call: x (every prompt part's prediction, then the negative prompt's) may be replaced."""
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGCallbackParams:
    """After guidance: x (the guided prediction) may be replaced."""
    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclass
class UiTrainTabParams:
    txt2img_preview_params: list = field(default_factory=list)


def _add(name: str, fn: Callable):
    if not callable(fn):
        raise TypeError(f"on_{name} needs a function, got {fn!r}")
    _registry[name].append(Registered(fn, current_script[-1] if current_script else None))


def on_app_started(fn): _add("app_started", fn)  # fn(demo: gr.Blocks | None, app: FastAPI)
def on_model_loaded(fn): _add("model_loaded", fn)  # fn(sd_model)
def on_ui_tabs(fn): _add("ui_tabs", fn)  # fn() -> [(gr.Blocks, title, elem_id), …]
def on_ui_settings(fn): _add("ui_settings", fn)  # fn()
def on_before_image_saved(fn): _add("before_image_saved", fn)  # fn(ImageSaveParams)
def on_image_saved(fn): _add("image_saved", fn)  # fn(ImageSaveParams)
def on_cfg_denoiser(fn): _add("cfg_denoiser", fn)  # fn(CFGDenoiserParams)
def on_cfg_denoised(fn): _add("cfg_denoised", fn)  # fn(CFGDenoisedParams)
def on_cfg_after_cfg(fn): _add("cfg_after_cfg", fn)  # fn(AfterCFGCallbackParams)
def on_infotext_pasted(fn): _add("infotext_pasted", fn)  # fn(infotext: str, params: dict)
def on_before_ui(fn): _add("before_ui", fn)  # fn()
def on_script_unloaded(fn): _add("script_unloaded", fn)  # fn()


def callbacks(name: str) -> list[Registered]:
    return list(_registry[name])


def has(name: str) -> bool:
    return bool(_registry[name])


def run(name: str, *args) -> list:
    """Call every callback registered under name; returns their results (a failed one: left out, logged)."""
    results = []
    for entry in callbacks(name):
        try:
            results.append(entry.fn(*args))
        except Exception as e:  # an extension's bug: reported, the others still run
            message = f"{name} callback from {entry.script or 'unknown script'} failed: {type(e).__name__}: {e}"
            log.exception(message)
            errors.append(message)
    return results


def run_strict(name: str, *args) -> None:
    """As run, but an exception propagates: for the callbacks inside a job (CFG, image saving), where going
    on would save a picture the extension did not mean to make."""
    for entry in callbacks(name):
        entry.fn(*args)


def remove_callbacks_for(script: str) -> None:
    for name in list(_registry):
        _registry[name] = [r for r in _registry[name] if r.script != script]


def remove_current_script_callbacks() -> None:
    if current_script:
        remove_callbacks_for(current_script[-1])


def clear() -> None:
    _registry.clear()
    errors.clear()
