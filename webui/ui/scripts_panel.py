"""The scripts' part of a generation tab, as A1111 lays it out: the always-on scripts' controls, then the
"Script" dropdown with the selected script's controls under it. The values reach the Generate handler as
A1111's flat script_args (the dropdown's index first)."""
from __future__ import annotations

import gradio as gr

from ..engine.errors import UserError
from ..scripts.runner import ScriptRunner


def build(runner: ScriptRunner | None, tab: str) -> list:
    """The components whose values are the job's script_args ([] without scripts)."""
    if runner is None:
        return []
    groups = {}
    holder = {}

    def group(script):
        if script.alwayson:
            return gr.Group(elem_id=f"{tab}_script_{id(script)}")
        groups[script] = gr.Group(visible=False)
        return groups[script]

    def dropdown():
        holder["dropdown"] = gr.Dropdown(["None", *runner.titles()], value="None", type="index", label="Script",
                                         elem_id=f"{tab}_script")

    inputs = runner.setup_ui(make_group=group, between=dropdown)
    choice = holder["dropdown"]
    shown = [groups[s] for s in runner.selectable]
    if runner.errors:
        gr.Markdown("\n".join(f"⚠️ {line}" for line in runner.errors), elem_id=f"{tab}_script_errors")

    def show(index):
        index = int(index or 0)
        return [gr.update(visible=(i + 1 == index)) for i in range(len(shown))]
    choice.change(show, inputs=choice, outputs=shown, api_name=False, queue=False, show_progress="hidden")
    return [choice, *inputs[1:]]


def script_args(values: tuple) -> list | None:
    """The handler's *script_args, or None when the tab has no scripts (the job runs without them)."""
    if not values:
        return None
    args = list(values)
    if isinstance(args[0], str):  # an API client may send the title instead of the index
        raise UserError("choose the script by its number in the Script list")
    return args


def result_outputs(processed):
    """(gallery items, paths for "Send to") for a job's result: a script's pictures (grids are not all
    saved) as images, a plain job's saved files as paths."""
    if getattr(processed, "from_script", False):
        return list(processed.images), []
    paths = [str(p) for p in processed.paths]
    # pictures an always-on script added after the job's own (ControlNet's detected maps): shown, not saved
    added = list(processed.images[len(processed.infotexts):]) if paths else []
    return paths + added, paths


def infotext_fields(runner) -> list:
    """Every script's (component, infotext key or fn(pasted) → value) pairs (A1111's Script.infotext_fields), for a
    tab's paste."""
    return [pair for script in (runner.scripts if runner else [])
            for pair in (getattr(script, "infotext_fields", None) or [])]


def pasted_values(fields: list, pasted: dict) -> list:
    """The values those components take for a pasted infotext's fields; a key it does not name changes nothing."""
    import gradio as gr

    return [key(pasted) if callable(key) else (pasted[key] if key in pasted else gr.update()) for _, key in fields]
