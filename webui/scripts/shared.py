"""What A1111 extensions reach through `modules.shared`: the running app's pipeline manager (set when the scripts
are connected to it). Extensions that need the loaded model, the settings or a models folder read it here."""
from __future__ import annotations

manager = None  # webui.engine.manager.PipelineManager, once ScriptSystem.connect ran
