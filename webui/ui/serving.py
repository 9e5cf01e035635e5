"""What the HTTP server hands out and takes in, on top of gradio's own checks.

- Files: gradio's file route (`/gradio_api/file=PATH`) serves a local file when gradio allows it. Our rule, checked
  first by `FileRouteGuard`: the path is inside one of our folders (the outputs folder, gradio's upload/cache
  folder) or is a LoRA preview the listing offered, and its realpath stays inside that same folder (for a preview:
  the LoRA folder). A symlink leaving the folder, a path that is not ours, a remote URL: 403, whatever gradio's
  version would decide (gradio 6 resolves paths too, but also allows the target of any registered static file,
  so a preview swapped for a symlink after it was listed would make its target servable).
- Bodies: `BodyLimit` refuses a request body over the `upload_limit_mb` setting with 413, from Content-Length
  before reading anything, else once the bytes read pass it. gradio's `max_file_size` (the page checks it before
  uploading, the upload route while parsing) follows the same setting.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gradio.route_utils import API_PREFIX
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

MB = 1024 * 1024
FILE_ROUTES = (f"{API_PREFIX}/file=", f"{API_PREFIX}/file/")


def _inside(path: str, folder: str) -> bool:
    return Path(path).is_relative_to(folder)


@dataclass
class ServedFiles:
    """folders: every file under these may be served; previews: () → {offered file: the folder it must resolve
    into}, asked per request so a preview listed after launch is served."""
    folders: Iterable[Path]
    previews: Callable[[], dict[str, Path]] = dict

    def allows(self, requested: str) -> bool:
        if "://" in requested:  # gradio would fetch a remote URL for the browser; nothing of ours is remote
            return False
        lexical = os.path.abspath(requested)  # what gradio will open (relative = from the working directory)
        real = os.path.realpath(lexical)
        for folder in self.folders:
            root_real = os.path.realpath(folder)
            if (_inside(lexical, os.path.abspath(folder)) or _inside(lexical, root_real)) \
                    and _inside(real, root_real):
                return True
        root = self.previews().get(lexical)
        return root is not None and _inside(real, os.path.realpath(root))


def _requested_file(scope) -> str | None:
    """The PATH of a file-route request, None for any other request."""
    path = scope.get("path", "")
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):  # behind a proxy prefix, scope["path"] includes it
        path = path[len(root_path):]
    for prefix in FILE_ROUTES:
        if path.startswith(prefix):
            return path[len(prefix):]
    return None


async def _refuse(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class FileRouteGuard:
    """ASGI middleware: a file-route request for a path `allows` refuses gets 403 and never reaches gradio."""

    def __init__(self, app, allows: Callable[[str], bool]):
        self.app, self.allows = app, allows

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            requested = _requested_file(scope)
            if requested is not None and not self.allows(requested):
                await _refuse(send, 403, "File not allowed")
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit()` bytes (asked per request: the setting may change).
    A declared Content-Length is refused before any byte is read; a body without one (chunked) is cut off where
    it passes the limit: the app sees the client leave, and its answer is replaced by the 413."""

    def __init__(self, app, limit: Callable[[], int]):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit()
        text = f"Request body over the upload size limit of {limit // MB} MB (setting upload_limit_mb)"
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _refuse(send, 413, text)
        state = {"read": 0, "over": False, "started": False}

        async def limited_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"] and not state["started"]:
                return  # the app's answer to a body cut short; the 413 goes out instead
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _refuse(send, 413, text)


def launch_options(folders: Iterable[Path], previews: Callable[[], dict[str, Path]],
                   limit: Callable[[], int]) -> dict:
    """The Blocks.launch keyword arguments that apply these rules. `folders`: ours besides gradio's upload folder
    (the outputs folder); they are also gradio's allowed_paths, which gradio needs to copy a result from there
    into its cache for the gallery."""
    folders = [Path(folder).resolve() for folder in folders]
    served = ServedFiles([*folders, Path(get_upload_folder())], previews)
    return dict(allowed_paths=[str(folder) for folder in folders], max_file_size=limit(),
                app_kwargs={"middleware": [Middleware(FileRouteGuard, allows=served.allows),
                                           Middleware(BodyLimit, limit=limit)]})
