"""A live API server on a free port: the standalone app (--nowebui) in a uvicorn thread, over the `manager`
fixture (tiny model, data_dir with outputs/)."""
import socket
import threading
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_api(manager, data_dir, **config):
    from webui.api.routes import ApiConfig
    from webui.api.server import standalone_app

    cors = config.pop("cors", None)
    return LiveServer(standalone_app(manager, ApiConfig(data_dir / "outputs", **config), cors=cors))


@pytest.fixture
def api(manager, data_dir):
    """The base URL of a live API server (standalone, no auth)."""
    with start_api(manager, data_dir, flags={"api": True}) as server:
        yield server.url


@pytest.fixture
def webui(api):
    """A1111's own client (PyPI webuiapi) pointed at the live server."""
    import webuiapi

    host, port = api.rsplit(":", 1)
    return webuiapi.WebUIApi(host=host.removeprefix("http://"), port=int(port), sampler="Euler a", steps=4)
