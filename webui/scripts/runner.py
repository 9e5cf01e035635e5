"""The scripts of one tab (txt2img or img2img): which are selectable, which always on, where each one's
arguments sit in the flat argument list (A1111's script_args: index 0 is the Script dropdown's choice, then each
script's arguments at [args_from, args_to)), and calling them safely."""
from __future__ import annotations

import logging

from ..engine.errors import UserError
from .processing import ScriptError, _guard
from .script_api import AlwaysVisible, Script

log = logging.getLogger("webui.scripts")


class ScriptRunner:
    def __init__(self, scripts: list[Script], is_img2img: bool):
        self.is_img2img = is_img2img
        self.errors: list[str] = []
        self.selectable: list[Script] = []
        self.alwayson: list[Script] = []
        for script in scripts:
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            try:
                visibility = script.show(is_img2img)
                title = script.title()
            except Exception as e:  # a broken script is left out; the others still load
                self._report(script, "show()/title()", e)
                continue
            script.name, script.display_title = title.lower(), title  # A1111: the API lists lower-case names
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.alwayson.append(script)
            elif visibility:
                self.selectable.append(script)
        self.scripts = self.alwayson + self.selectable
        self.inputs: list = [None]  # the Script dropdown, then every script's components
        self.ui_built = False

    def _report(self, script: Script, what: str, e: Exception):
        origin = getattr(script, "filename", None) or type(script).__name__
        message = f"script {origin}: {what} failed: {type(e).__name__}: {e}"
        log.error(message)
        self.errors.append(message)

    def titles(self) -> list[str]:
        return [s.display_title for s in self.selectable]

    def setup_ui(self, make_group=None, between=None) -> list:
        """Build each script's components (inside the caller's gradio context) and lay out the argument list.
        make_group(script) -> context manager wrapping a script's components (an accordion, a hidden group);
        between(): called after the always-on scripts, before the selectable ones (the Script dropdown).
        A script whose ui() raises is dropped with a message."""
        import contextlib

        kept = []
        self.inputs = [None]
        for script in self.scripts:
            if between is not None and script is (self.selectable[0] if self.selectable else None):
                between()
                between = None
            group = make_group(script) if make_group is not None else contextlib.nullcontext()
            try:
                with group:
                    controls = script.ui(self.is_img2img)
            except Exception as e:
                self._report(script, "ui()", e)
                continue
            controls = list(controls or [])
            script.controls = controls
            script.args_from = len(self.inputs)
            self.inputs.extend(controls)
            script.args_to = len(self.inputs)
            kept.append(script)
        if between is not None:
            between()
        self.alwayson = [s for s in self.alwayson if s in kept]
        self.selectable = [s for s in self.selectable if s in kept]
        self.scripts = kept
        self.ui_built = True
        return self.inputs

    def ensure_args_layout(self):
        """The argument layout without a visible UI (API, CLI): the components are built in a scratch Blocks."""
        if self.ui_built:
            return
        import gradio as gr

        with gr.Blocks():
            self.setup_ui()

    def default_args(self) -> list:
        self.ensure_args_layout()
        return [0] + [getattr(c, "value", None) for c in self.inputs[1:]]

    def find(self, title: str) -> Script:
        for script in self.selectable:
            if script.name == str(title).lower():
                return script
        names = ", ".join(self.titles()) or "none"
        raise UserError(f"Script '{title}' not found (available: {names})")

    def find_alwayson(self, title: str) -> Script:
        for script in self.alwayson:
            if script.name == str(title).lower():
                return script
        raise UserError(f"always on script {title} not found")

    def build_args(self, script_name: str | None, script_args: list | None, alwayson: dict | None) -> list:
        """A1111's API: defaults everywhere, the named selectable script's args and each always-on script's
        {"args": [...]} placed at their positions."""
        args = self.default_args()
        if script_name:
            script = self.find(script_name)
            args[0] = self.selectable.index(script) + 1
            _place(args, script, script_args or [])
        for title, value in (alwayson or {}).items():
            given = value.get("args", []) if isinstance(value, dict) else value
            if not given and not any(s.name == str(title).lower() for s in self.alwayson):
                continue  # A1111 accepts empty args for an extension that is not installed: clients send them
            _place(args, self.find_alwayson(title), list(given or []))
        return args

    def call_alwayson(self, method: str, p, *args, **kwargs):
        """method(p, *args, *the script's own args, **kwargs) on every always-on script, A1111's order
        (postprocess_image(p, pp, *own), process_batch(p, *own, batch_number=…))."""
        for script in self.alwayson:
            own = p.script_args[script.args_from:script.args_to] if script.args_from is not None else []
            _guard(f"script '{script.display_title}' {method}()", getattr(script, method), p, *args, *own, **kwargs)

    def run(self, p, args: list):
        """The selected script's run(p, …), or None when no script is selected (the caller runs the job).
        Always-on scripts' setup() runs first either way."""
        p.scripts, p.script_args = self, list(args)
        for script in self.alwayson:
            own = p.script_args[script.args_from:script.args_to]
            _guard(f"script '{script.display_title}' setup()", script.setup, p, *own)
        index = int(args[0] or 0) if args else 0
        if index == 0:
            return None
        if not 0 < index <= len(self.selectable):
            raise UserError(f"no script number {index}")
        script = self.selectable[index - 1]
        processed = _guard(f"script '{script.display_title}'", script.run, p, *args[script.args_from:script.args_to])
        if processed is None:
            raise ScriptError(f"script '{script.display_title}' returned no result")
        return processed


def _place(args: list, script: Script, given: list):
    count = script.args_to - script.args_from
    if len(given) > count:
        raise UserError(f"script '{script.display_title}' takes {count} arguments, got {len(given)}")
    args[script.args_from:script.args_from + len(given)] = given
