"""Where the API is served: on the UI's own server (`--api`: the routes join gradio's FastAPI app, as A1111 does)
or alone (`--nowebui`: a FastAPI app of its own, A1111's port 7861). Either way the same routes, the same request
size limit and the same CORS rule."""
from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware

from ..engine.manager import PipelineManager
from ..ui.serving import MB, BodyLimit
from .routes import ApiConfig, build_router

NOWEBUI_PORT = 7861
DOCS = {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}


def cors_middleware(origins: str | None) -> list[Middleware]:
    """--cors-allow-origins a,b: those origins may call the API from a browser page (none by default)."""
    allowed = [o.strip() for o in (origins or "").split(",") if o.strip()]
    if not allowed:
        return []
    return [Middleware(CORSMiddleware, allow_origins=allowed, allow_methods=["*"], allow_headers=["*"],
                       allow_credentials=True)]


def attach(app: FastAPI, manager: PipelineManager, config: ApiConfig) -> None:
    """Add the API routes to a running app (the UI's)."""
    app.include_router(build_router(manager, config))
    app.openapi_schema = None  # regenerated with the new routes on the next /openapi.json


def standalone_app(manager: PipelineManager, config: ApiConfig, cors: str | None = None) -> FastAPI:
    def limit() -> int:
        return int(manager.settings.upload_limit_mb) * MB

    app = FastAPI(title="Gouache API", middleware=[Middleware(BodyLimit, limit=limit), *cors_middleware(cors)],
                  **DOCS)
    app.include_router(build_router(manager, config))
    return app


def serve(manager: PipelineManager, config: ApiConfig, host: str, port: int, cors: str | None = None,
          on_started: Callable[[], None] | None = None, on_app: Callable | None = None) -> None:
    """`on_app(app)`: called with the FastAPI app before serving (extensions' on_app_started add routes)."""
    import uvicorn

    app = standalone_app(manager, config, cors)
    if on_app is not None:
        on_app(app)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    if on_started is not None:
        on_started()
    server.run()
