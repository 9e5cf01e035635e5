"""The Extensions tab: installed extensions (built-in and user) with their state and errors, and A1111's
enable/disable, stored in the `disabled_extensions` setting (config.json); it takes effect on restart."""
from __future__ import annotations

import gradio as gr

from ..engine.manager import PipelineManager


def rows(system) -> list[list]:
    return [[ext.name, "built-in" if ext.builtin else "user", "yes" if ext.enabled else "no",
             ", ".join(f.name for f in ext.script_files) or "—", "; ".join(ext.errors) or ""]
            for ext in system.extensions]



def build(manager: PipelineManager, system) -> None:
    user = [e.name for e in system.extensions if not e.builtin]
    gr.Markdown("Extensions live in `extensions/<name>/` (`scripts/*.py`, `style.css`, `javascript/*.js`, "
                "`metadata.ini`). Changes take effect when the UI is restarted.")
    gr.Dataframe(rows(system), headers=["Extension", "Kind", "Enabled", "Scripts", "Errors"],
                 interactive=False, elem_id="extensions_table", wrap=True)
    if system.errors:
        gr.Markdown("\n".join(f"- ⚠️ {line}" for line in system.errors), elem_id="extensions_errors")
    enabled = gr.CheckboxGroup(user, value=[n for n in user if n not in manager.settings.disabled_extensions],
                               label="Enabled user extensions", elem_id="extensions_enabled")
    apply = gr.Button("Apply (restart the UI to load or unload)", elem_id="extensions_apply")
    status = gr.Markdown()

    def save(chosen):
        disabled = sorted(set(user) - set(chosen or []))
        manager.update_settings(disabled_extensions=disabled)
        return f"Saved: {len(disabled)} disabled. Restart the UI to apply."
    apply.click(save, inputs=enabled, outputs=status, api_name="extensions_apply")
