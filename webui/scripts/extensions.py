"""Extensions: folders with `scripts/*.py` (and optional `style.css`, `javascript/*.js`, `metadata.ini`,
`install.py`), found in the built-in folder and the user's `extensions/`, ordered by metadata.ini's
Requires / Before / After, each script file imported on its own.

An extension that fails (a syntax error, an exception at import) is reported and skipped, never stopping
start-up. `install.py` runs only with --enable-insecure-extension-access: it is arbitrary code from a folder."""
from __future__ import annotations

import configparser
import importlib.util
import inspect
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import callbacks
from .runner import ScriptRunner
from .script_api import Script

log = logging.getLogger("webui.scripts")

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass
class Extension:
    name: str
    path: Path
    builtin: bool = False
    enabled: bool = True
    requires: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    script_classes: list[tuple[str, type]] = field(default_factory=list)  # (file, Script subclass)

    @property
    def script_files(self) -> list[Path]:
        folder = self.path / "scripts"
        return sorted(folder.glob("*.py")) if folder.is_dir() else []

    @property
    def css(self) -> str:
        style = self.path / "style.css"
        return style.read_text(encoding="utf-8", errors="replace") if style.is_file() else ""

    @property
    def javascript(self) -> list[Path]:
        folder = self.path / "javascript"
        return sorted(folder.glob("*.js")) if folder.is_dir() else []


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").replace(",", " ").split() if n.strip()]


def _read_metadata(ext: Extension):
    ini = ext.path / "metadata.ini"
    if not ini.is_file():
        return
    parser = configparser.ConfigParser()
    try:
        parser.read(ini, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        ext.errors.append(f"metadata.ini unreadable: {e}")
        return
    section = parser["Extension"] if parser.has_section("Extension") else {}
    ext.name = section.get("Name", ext.name) or ext.name
    ext.requires = _names(section.get("Requires"))
    ext.before = _names(section.get("Before"))
    ext.after = _names(section.get("After"))


def discover(user_dir: Path | None, disabled: set[str] = frozenset(), builtin_dir: Path = BUILTIN_DIR) \
        -> list[Extension]:
    """Built-in extensions first, then the user's, each group by name, then reordered so that an extension
    loads after those it Requires or names in After, and before those it names in Before."""
    found = []
    for folder, builtin in ((builtin_dir, True), (user_dir, False)):
        if folder is None or not Path(folder).is_dir():
            continue
        for path in sorted(Path(folder).iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                ext = Extension(path.name, path, builtin=builtin)
                _read_metadata(ext)
                ext.enabled = path.name not in disabled and ext.name not in disabled
                found.append(ext)
    return _order(found)


def _order(extensions: list[Extension]) -> list[Extension]:
    names = {e.name: e for e in extensions}
    after = {e.name: set() for e in extensions}
    for e in extensions:
        missing = [r for r in e.requires if r not in names]
        if missing:
            e.errors.append(f"requires {', '.join(missing)}, which is not installed")
        after[e.name].update(n for n in e.requires + e.after if n in names)
        for later in e.before:
            if later in names:
                after[later].add(e.name)
    ordered, done = [], set()

    def visit(e, path=()):
        if e.name in done:
            return
        if e.name in path:  # a cycle: keep the discovery order for the rest
            e.errors.append(f"ordering cycle through {' → '.join(path + (e.name,))}")
            return
        for name in sorted(after[e.name], key=[x.name for x in extensions].index):
            visit(names[name], path + (e.name,))
        done.add(e.name)
        ordered.append(e)
    for e in extensions:
        visit(e)
    return ordered


def run_install(ext: Extension, allowed: bool):
    script = ext.path / "install.py"
    if not script.is_file():
        return
    if not allowed:
        log.info("not running %s: start with --enable-insecure-extension-access to allow it", script)
        return
    result = subprocess.run([sys.executable, str(script)], cwd=ext.path, capture_output=True, text=True)
    if result.returncode != 0:
        ext.errors.append(f"install.py failed: {result.stderr.strip()[-500:]}")


def load(extensions: list[Extension], allow_install: bool = False):
    """Import every enabled extension's scripts; callbacks they register are tagged with their file."""
    for ext in extensions:
        ext.script_classes = []
        if not ext.enabled or any(e.startswith("requires ") for e in ext.errors):
            continue
        run_install(ext, allow_install)
        for path in ext.script_files:
            module_name = f"webui_extension_{_identifier(ext.name)}_{_identifier(path.stem)}"
            callbacks.current_script.append(str(path))
            try:
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except (Exception, SystemExit) as e:  # SyntaxError, ImportError, a sys.exit(): skip this file
                sys.modules.pop(module_name, None)
                callbacks.remove_callbacks_for(str(path))
                message = f"{path.name}: {type(e).__name__}: {e}"
                log.error("extension %s failed to load %s", ext.name, message)
                ext.errors.append(message)
                continue
            finally:
                callbacks.current_script.pop()
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, Script) and cls is not Script and cls.__module__ == module_name:
                    ext.script_classes.append((str(path), cls))


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


@dataclass
class ScriptSystem:
    """The loaded extensions and one ScriptRunner per tab: what the UI, the API and the CLI share."""
    extensions: list[Extension]
    txt2img: ScriptRunner
    img2img: ScriptRunner

    def runner(self, is_img2img: bool) -> ScriptRunner:
        return self.img2img if is_img2img else self.txt2img

    @property
    def errors(self) -> list[str]:
        lines = [f"{e.name}: {message}" for e in self.extensions for message in e.errors]
        return lines + self.txt2img.errors + self.img2img.errors + callbacks.errors

    def connect(self, manager) -> None:
        """Extensions' on_model_loaded callbacks get each checkpoint the manager loads (its components); the
        manager is theirs to read as `webui.scripts.shared.manager`."""
        from . import shared

        shared.manager = manager
        manager.model_listeners[:] = [f for f in manager.model_listeners if not getattr(f, "from_scripts", False)]

        def loaded(model):
            callbacks.run("model_loaded", model.components)
        loaded.from_scripts = True
        manager.model_listeners.append(loaded)

    @property
    def css(self) -> str:
        return "\n".join(e.css for e in self.extensions if e.enabled and e.css)

    @property
    def javascript(self) -> list[Path]:
        return [js for e in self.extensions if e.enabled for js in e.javascript]


def _instances(extensions: list[Extension]) -> list[Script]:
    made = []
    for ext in extensions:
        for filename, cls in ext.script_classes:
            try:
                script = cls()
            except Exception as e:
                ext.errors.append(f"{Path(filename).name}: {cls.__name__}() failed: {type(e).__name__}: {e}")
                continue
            script.filename, script.extension = filename, ext
            made.append(script)
    return made


def load_scripts(user_dir: Path | None, disabled: set[str] = frozenset(), allow_install: bool = False,
                 builtin_dir: Path = BUILTIN_DIR) -> ScriptSystem:
    callbacks.clear()
    extensions = discover(user_dir, disabled, builtin_dir)
    load(extensions, allow_install)
    return ScriptSystem(extensions, ScriptRunner(_instances(extensions), False),
                        ScriptRunner(_instances(extensions), True))
