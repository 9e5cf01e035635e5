"""The engine imports no web framework: the UI is built on it, never the other way round."""
from __future__ import annotations

import ast
from pathlib import Path

import webui.engine

ENGINE = Path(webui.engine.__file__).parent  # the whole engine package, every subpackage included


def test_engine_imports_no_web_framework():
    assert (ENGINE / "jobs" / "run.py").exists() and (ENGINE / "models" / "families").is_dir()
    banned = {"gradio", "fastapi", "starlette", "uvicorn"}
    for path in ENGINE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & banned, f"{path.relative_to(ENGINE)} imports {names}"
