"""A1111's quicksettings bar: beside the checkpoint, a control for each setting `quicksettings_list` names, made by
settings.make_widget as on the Settings tab. A change is applied and saved at once; a refused one shows gradio's
error and the control goes back to the stored value. The list is read when the page is built (A1111: "requires UI
reload")."""
from __future__ import annotations

import functools

import gradio as gr

from ..engine.manager import PipelineManager
from . import settings
from .common import user_errors_as_gradio


def names(manager: PipelineManager) -> list[str]:
    """The settings the bar shows, in the listed order, each once. Names this UI has no control for (an A1111
    extension's option in a copied config.json) are skipped; the checkpoint is on the bar whatever the list says,
    since the tabs take their checkpoint from it."""
    known = set(settings.quicksettings_choices()) - {settings.CHECKPOINT}
    return list(dict.fromkeys(n for n in manager.settings.quicksettings_list if n in known))


def build(manager: PipelineManager) -> dict:
    """{setting name: its control}, in the row being built."""
    return {name: settings.make_widget(name, manager, elem_id=f"quicksettings_{name}", scale=2, min_width=160)
            for name in names(manager)}


def apply(manager: PipelineManager, name: str, value):
    """Store one setting from its control and return the stored value; UserError naming the setting, with
    nothing stored, for a bad value."""
    value = settings.coerce(name, value)
    if value != getattr(manager.settings, name):  # an unchanged value need not rewrite config.json
        manager.update_settings(**{name: value})
    return getattr(manager.settings, name)


def _committed(widget) -> list:
    """The events that mean the user settled on a value. Each applies and rewrites config.json, so not every drag
    step or keystroke; and only the user's, so the updates sent back to the bar never re-apply."""
    if isinstance(widget, gr.Slider):
        return [widget.release]
    if isinstance(widget, (gr.Number, gr.Textbox)):
        return [widget.submit, widget.blur]
    return [widget.input]


def wire(manager: PipelineManager, bar: dict, tab: settings.SettingsTab) -> None:
    """A bar control applies its setting and moves the Settings tab's twin; Apply settings moves the bar."""
    for name, widget in bar.items():
        stored = functools.partial(settings.shown, name, manager)
        gr.on(_committed(widget), _setter(manager, name), inputs=widget, outputs=tab.widgets[name],
              api_name=f"quicksetting_{name}", show_progress="hidden") \
            .then(stored, outputs=widget, api_name=False, show_progress="hidden")  # runs after a refusal too
        tab.applied.then(stored, outputs=widget, api_name=False, show_progress="hidden")


def _setter(manager: PipelineManager, name: str):
    @user_errors_as_gradio
    def set_value(value):
        apply(manager, name, value)
        return settings.shown(name, manager)  # the tab's twin, its file list re-read
    return set_value
