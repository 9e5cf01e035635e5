"""A1111's "Lora" extra-networks tab, as an accordion under the txt2img prompts.

- One card per file in models/Lora (subfolders included): preview thumbnail, file name, training alias, subfolder.
  The listing is built from `LoraLibrary.list()` alone: no file is opened and no image decoded to build it
  (the library reads each safetensors header once per scan). Thumbnails are `<img loading="lazy">` pointing at
  gradio's own file route, `gradio_api/file=<absolute path>`, so the browser fetches only the previews it scrolls
  to. Gradio serves a local file there only when it is allowed: each preview file (not its folder, so the LoRA
  weights next to it stay private) is registered with `gr.set_static_paths` the first time a listing shows it.
  That works offline, needs nothing at launch (`allowed_paths`) and keeps the URL relative, so a proxy root
  path works too.
- Clicking a card toggles `<lora:NAME:1>` in the prompt, as A1111's extraNetworksUpdatePrompt: appended with the
  separator when absent (no separator on an empty prompt), removed with its separator when present (whatever
  its multiplier). The click is a custom event of the gr.HTML component (`trigger('lora_insert', {name})` in
  `js_on_load`), handled in Python by the pure `toggle_lora_tag`.
- NAME is the training alias when it names this file unambiguously (A1111's "lora_preferred_name" default,
  "Alias from file"), else the file name, else the path relative to the folder ("style/ink") for files that
  share a name across subfolders: always something `LoraLibrary.find` resolves to that same file.
- Training metadata on demand: the ⓘ on a card, or the name box and "Show metadata", read that one file's
  header (already cached by the scan) and show it with the top tags of `ss_tag_frequency`.

API (gradio_client): /lora_list (search) → html, /lora_refresh (search) → html (rescans the folder),
/lora_metadata (name) → dict, /lora_toggle (prompt, name, multiplier) → prompt.
"""
from __future__ import annotations

import html
import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from ..engine.lora.library import LoraInfo, LoraLibrary
from ..engine.manager import PipelineManager
from .common import user_errors_as_gradio

SEPARATOR = " "           # A1111's extra_networks_add_text_separator default
DEFAULT_MULTIPLIER = 1.0  # A1111's extra_networks_default_multiplier default
TOP_TAGS = 30
LONG_VALUE = 2000         # metadata strings longer than this (embedded thumbnails…) are cut in the view

# ---------------------------------------------------------------- prompt tags


def _format_multiplier(multiplier: float) -> str:
    return f"{float(multiplier):g}"


def _tag_pattern(name: str) -> re.Pattern:
    """<lora:NAME> or <lora:NAME:any args>, the name matched exactly."""
    return re.compile(r"<lora:" + re.escape(name) + r"(?::[^>]*)?>")


def toggle_lora_tag(prompt: str, tag_name: str, multiplier: float = DEFAULT_MULTIPLIER,
                    separator: str = SEPARATOR) -> str:
    """What clicking a LoRA card does to the prompt, as A1111: if a `<lora:tag_name:…>` tag is there (any
    multiplier), remove it (each occurrence) with the separator just before it, and a separator left at the very
    start; otherwise append `<lora:tag_name:multiplier>`, after the separator unless the prompt is empty."""
    prompt = prompt or ""
    pattern = _tag_pattern(tag_name)
    if not pattern.search(prompt):
        tag = f"<lora:{tag_name}:{_format_multiplier(multiplier)}>"
        return prompt + separator + tag if prompt else tag
    out, pos = [], 0
    for match in pattern.finditer(prompt):
        piece = prompt[pos:match.start()]
        if separator and piece.endswith(separator):
            piece = piece[:-len(separator)]
        out.append(piece)
        pos = match.end()
    out.append(prompt[pos:])
    result = "".join(out)
    if separator and result.startswith(separator):
        result = result[len(separator):]
    return result


# ---------------------------------------------------------------- names


class _Names:
    """Which word in a tag names each file, by LoraLibrary.find's rules (file name, then relative path, then an
    alias no other file shares), computed once per listing instead of once per card."""

    def __init__(self, items: Sequence[LoraInfo]):
        self.by_name: dict[str, LoraInfo] = {}
        self.by_relative: dict[str, LoraInfo] = {}
        self.alias_count: dict[str, int] = {}
        for info in items:
            self.by_name.setdefault(info.name, info)
            self.by_relative.setdefault(info.relative, info)
            self.alias_count[info.alias] = self.alias_count.get(info.alias, 0) + 1
        self.by_alias = {info.alias: info for info in items if self.alias_count[info.alias] == 1}

    def resolve(self, word: str) -> LoraInfo | None:
        return self.by_name.get(word) or self.by_relative.get(word) or self.by_alias.get(word)

    def tag_name(self, info: LoraInfo) -> str:
        for word in (info.alias, info.name, info.relative):
            if self.resolve(word) is info:
                return word
        return info.relative


def tag_name(library: LoraLibrary, info: LoraInfo) -> str:
    return _Names(library.list()).tag_name(info)


# ---------------------------------------------------------------- listing

_served: set[str] = set()
_served_lock = threading.Lock()


def preview_url(path: Path) -> str:
    """A URL relative to the page for one preview file, registered with gradio as a static file (only that
    file) the first time it is shown."""
    absolute = os.path.abspath(path)
    with _served_lock:
        if absolute not in _served:
            gr.set_static_paths([absolute])
            _served.add(absolute)
    return "gradio_api/file=" + quote(Path(absolute).as_posix(), safe="/:")


def offered_previews() -> set[str]:
    """The preview files listings have offered so far (absolute paths, as in their URLs): the file route serves
    these and, in the LoRA folder, nothing else (webui/ui/serving.py)."""
    with _served_lock:
        return set(_served)


def matches(info: LoraInfo, search: str) -> bool:
    needle = (search or "").strip().lower()
    return not needle or any(needle in text.lower() for text in (info.name, info.alias, info.relative))


def _card(info: LoraInfo, name: str) -> str:
    esc = html.escape
    folder = info.relative.rpartition("/")[0]
    if info.preview is not None:
        thumb = (f'<img class="lora-thumb" loading="lazy" decoding="async" alt="" '
                 f'src="{esc(preview_url(info.preview))}">')
    else:
        thumb = f'<div class="lora-thumb lora-nothumb">{esc(info.name[:2].upper())}</div>'
    alias = f'<div class="lora-alias">{esc(info.alias)}</div>' if info.alias != info.name else ""
    folder_html = f'<div class="lora-folder">{esc(folder)}/</div>' if folder else ""
    return (f'<div class="lora-card" role="button" tabindex="0" data-name="{esc(name)}" '
            f'title="{esc(f"<lora:{name}:1>  ({info.relative})")}">{thumb}'
            f'<button class="lora-info" type="button" title="Training metadata">i</button>'
            f'<div class="lora-text"><div class="lora-name">{esc(info.name)}</div>{alias}{folder_html}</div></div>')


def render_cards(items: Sequence[LoraInfo], search: str = "", folder: Path | None = None) -> str:
    """The card grid for these files, filtered by a case-insensitive substring of name, alias or relative
    path. Pure string work on the LoraInfo fields: nothing is opened, read or decoded."""
    names = _Names(items)
    shown = [info for info in items if matches(info, search)]
    if not items:
        where = f" in <code>{html.escape(str(folder))}</code>" if folder is not None else ""
        return (f'<div class="lora-empty">No LoRA files{where} (.safetensors, .pt, .ckpt, subfolders too). '
                f'Put some there and press Refresh.</div>')
    count = (f"{len(items)} LoRA" + ("s" if len(items) != 1 else "") if len(shown) == len(items)
             else f"{len(shown)} of {len(items)} LoRAs match “{html.escape(search.strip())}”")
    cards = "".join(_card(info, names.tag_name(info)) for info in shown)
    return f'<div class="lora-count">{count}</div><div class="lora-cards">{cards}</div>'


def listing(library: LoraLibrary, search: str = "") -> str:
    return render_cards(library.list(), search, library.root)


def name_choices(library: LoraLibrary) -> list[tuple[str, str]]:
    items = library.list()
    names = _Names(items)
    return [(info.relative if info.alias == info.name else f"{info.relative} ({info.alias})",
             names.tag_name(info)) for info in items]


# ---------------------------------------------------------------- metadata

_RE_WORD = re.compile(r"[-_\w']+")


def top_tags(metadata: dict[str, str], limit: int | None = TOP_TAGS) -> list[tuple[str, int]]:
    """Tags of the training captions, most frequent first: ss_tag_frequency ({dataset folder: {tag: count}})
    summed over folders. Captions written as sentences instead of comma tags (long "tags" on average) are
    counted by word of 3+ letters instead, as A1111's metadata editor does."""
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency") or "{}")
    except ValueError:
        return []
    tags: dict[str, int] = {}
    if isinstance(frequency, dict):
        for folder in frequency.values():
            if not isinstance(folder, dict):
                continue
            for tag, count in folder.items():
                tag = str(tag).strip()
                try:
                    tags[tag] = tags.get(tag, 0) + int(count)
                except (TypeError, ValueError):
                    continue
    tags.pop("", None)
    if tags and sum(len(t) for t in tags) / len(tags) >= 16:
        words: dict[str, int] = {}
        for text, count in tags.items():
            for word in _RE_WORD.findall(text):
                if len(word) >= 3:
                    words[word] = words.get(word, 0) + count
        tags = words
    ordered = sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))
    return ordered[:limit] if limit is not None else ordered


def _readable(value: str):
    """A JSON object/array stored as a string (ss_dataset_dirs, ss_bucket_info…) shown as itself; very long
    strings (embedded cover images) cut."""
    text = value.strip()
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    if len(value) > LONG_VALUE:
        return value[:200] + f"… ({len(value)} characters)"
    return value


def metadata_view(library: LoraLibrary, name: str) -> dict:
    """The file a name resolves to, its top training tags and its whole `__metadata__` (read only now)."""
    name = (name or "").strip()
    if not name:
        return {}
    info = library.find(name)
    meta = info.metadata()
    view = {"name": info.name, "alias": info.alias, "file": info.relative + info.path.suffix,
            "tag": f"<lora:{tag_name(library, info)}:1>"}
    if not meta:
        view["note"] = ("no training metadata in this file" if info.path.suffix == ".safetensors"
                        else f"{info.path.suffix} files carry no metadata")
        return view
    view["top_tags"] = [[tag, count] for tag, count in top_tags(meta)]  # a list: JS reorders numeric keys
    view["metadata"] = {key: _readable(value) for key, value in sorted(meta.items())}
    return view


# ---------------------------------------------------------------- the widget

CSS = """
.lora-count { font-size: var(--text-sm); color: var(--body-text-color-subdued); margin: 0 0 6px; }
.lora-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 8px; }
.lora-card { position: relative; cursor: pointer; border: 1px solid var(--border-color-primary);
  border-radius: var(--radius-md); overflow: hidden; background: var(--background-fill-secondary); }
.lora-card:hover, .lora-card:focus { border-color: var(--color-accent); outline: none; }
.lora-thumb { display: block; width: 100%; aspect-ratio: 1 / 1; object-fit: cover; }
.lora-nothumb { display: flex; align-items: center; justify-content: center; font-size: 28px;
  color: var(--body-text-color-subdued); background: var(--background-fill-primary); }
.lora-text { padding: 4px 6px; font-size: var(--text-sm); line-height: 1.25; word-break: break-word; }
.lora-name { font-weight: 600; }
.lora-alias, .lora-folder { color: var(--body-text-color-subdued); }
.lora-info { position: absolute; top: 4px; right: 4px; border: none; border-radius: 50%; width: 24px;
  height: 24px; cursor: pointer; background: rgba(0, 0, 0, 0.55); color: white; font: italic 600 14px/24px Georgia, serif; padding: 0; }
.lora-empty { color: var(--body-text-color-subdued); }
"""

# One delegated listener on the component's root survives the re-renders of its contents.
JS = """
const fire = (ev) => {
  const card = ev.target.closest('.lora-card');
  if (!card || !element.contains(card)) return;
  ev.preventDefault();
  if (ev.target.closest('.lora-info')) trigger('lora_info', {name: card.dataset.name});
  else trigger('lora_insert', {name: card.dataset.name});
};
element.addEventListener('click', fire);
element.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') fire(ev); });
"""


def _event_name(evt: gr.EventData | None) -> str:
    data = getattr(evt, "_data", None)
    return str(data.get("name") or "") if isinstance(data, dict) else ""


def card_clicked(prompt: str, evt: gr.EventData) -> str:
    """The card's click: toggle its tag in the prompt."""
    name = _event_name(evt)
    return toggle_lora_tag(prompt, name) if name else prompt


def build(manager: PipelineManager, prompt: gr.Textbox, api: bool = True) -> gr.Accordion:
    """The LoRA accordion; clicks edit `prompt`. The listing is built when the accordion is opened (nothing is
    scanned at start-up or on page load while it stays closed). api=False for a second copy (another tab):
    the API endpoints exist once."""
    library = manager.loras
    with gr.Accordion("LoRA", open=False) as accordion:
        with gr.Row():
            search = gr.Textbox(show_label=False, placeholder="Search name, alias or folder", scale=4,
                                container=False)
            refresh = gr.Button("Refresh", scale=0, min_width=90)
        cards = gr.HTML("", css_template=CSS, js_on_load=JS, max_height=560, padding=False)
        with gr.Row():
            chosen = gr.Dropdown(choices=[], value=None, label="LoRA", allow_custom_value=True, scale=4)
            show = gr.Button("Show metadata", scale=0, min_width=130)
        meta = gr.JSON(label="Training metadata", value=None)

    def do_list(text):
        return listing(library, text)

    def do_refresh(text: str = "") -> str:
        """Rescan the LoRA folder; the card listing, filtered by `text`."""
        library.refresh()
        return listing(library, text)

    def do_open(text):
        return listing(library, text), gr.update(choices=name_choices(library))

    def do_refresh_ui(text):
        library.refresh()
        return do_open(text)

    @user_errors_as_gradio
    def do_metadata(name):
        return metadata_view(library, name)

    @user_errors_as_gradio
    def do_info(evt: gr.EventData):
        name = _event_name(evt)
        return gr.update(value=name, choices=name_choices(library)), metadata_view(library, name)

    def lora_toggle(prompt: str, name: str, multiplier: float = DEFAULT_MULTIPLIER) -> str:
        """Toggle <lora:name:multiplier> in a prompt, as clicking its card does."""
        return toggle_lora_tag(prompt, name, multiplier)

    hidden = {"show_progress": "hidden"}
    accordion.expand(do_open, inputs=search, outputs=[cards, chosen], api_name=False, queue=False, **hidden)
    search.change(do_list, inputs=search, outputs=cards, api_name="lora_list" if api else False, queue=False,
                  trigger_mode="always_last", **hidden)
    refresh.click(do_refresh_ui, inputs=search, outputs=[cards, chosen], api_name=False)
    # API-only twins of the Refresh button (the listing alone) and of a card click (prompt, name → prompt)
    if api:
        gr.api(do_refresh, api_name="lora_refresh")
        gr.api(lora_toggle, api_name="lora_toggle")
    cards.lora_insert(card_clicked, inputs=prompt, outputs=prompt, api_name=False, queue=False, **hidden)
    cards.lora_info(do_info, outputs=[chosen, meta], api_name=False, queue=False, **hidden)
    show.click(do_metadata, inputs=chosen, outputs=meta, api_name="lora_metadata" if api else False)
    chosen.select(do_metadata, inputs=chosen, outputs=meta, api_name=False, **hidden)
    return accordion
