"""--api-auth on every API route, and where the server listens (A1111's flags)."""
import pytest
import requests

from .conftest import start_api

ROUTE_PREFIXES = ("/sdapi/v1/", "/internal/")


def _api_routes(url) -> list[tuple[str, str]]:
    """Every API route the server documents (its OpenAPI schema lists each route it serves)."""
    paths = requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    return [(method.upper(), path) for path, methods in paths.items() if path.startswith(ROUTE_PREFIXES)
            for method in methods]


@pytest.fixture
def locked(manager, data_dir):
    with start_api(manager, data_dir, credentials={"alice": "s3cret:x", "bob": "pw"}) as server:
        yield server


def test_every_api_route_needs_the_credentials(locked):
    routes = _api_routes(locked.url)
    assert len(routes) > 30 and ("POST", "/sdapi/v1/txt2img") in routes and ("GET", "/sdapi/v1/options") in routes
    for method, path in routes:
        for auth in (None, ("alice", "wrong"), ("mallory", "s3cret:x"), ("bob", "s3cret:x")):
            reply = requests.request(method, locked.url + path, json={}, auth=auth, timeout=30)
            assert reply.status_code == 401, (method, path, auth, reply.text)
            assert reply.headers["WWW-Authenticate"] == "Basic"
            assert reply.json()["detail"] == "Incorrect username or password"


def test_right_credentials_pass(locked):
    assert requests.get(f"{locked.url}/sdapi/v1/options", auth=("alice", "s3cret:x"), timeout=30).status_code == 200
    reply = requests.post(f"{locked.url}/sdapi/v1/txt2img", auth=("bob", "pw"), timeout=120,
                          json={"prompt": "x", "width": 64, "height": 64, "steps": 2})
    assert reply.status_code == 200 and len(reply.json()["images"]) == 1


def test_webuiapi_client_with_credentials(locked):
    import webuiapi

    client = webuiapi.WebUIApi(host="127.0.0.1", port=locked.port, username="bob", password="pw", steps=2)
    assert client.txt2img(prompt="x", width=64, height=64, seed=1).info["all_seeds"] == [1]


def test_credentials_parse_from_text_or_file(tmp_path):
    from webui.api.auth import parse_credentials
    from webui.engine.errors import UserError

    assert parse_credentials("a:1,b:2:3") == {"a": "1", "b": "2:3"}
    file = tmp_path / "creds.txt"
    file.write_text("a:1\nb:2\n")
    assert parse_credentials(str(file)) == {"a": "1", "b": "2"}
    with pytest.raises(UserError, match="user:password") as error:
        parse_credentials("justaname")
    assert "justaname" not in str(error.value)


@pytest.fixture
def captured(monkeypatch):
    """run_ui with the servers replaced: what it would serve, where."""
    import webui.api.server as server
    import webui.ui.app as app

    seen = {}
    monkeypatch.setattr(app, "launch", lambda manager, **kw: seen.update(kw, ui=True))
    monkeypatch.setattr(server, "serve", lambda manager, config, host, port, cors=None, on_app=None: seen.update(
        host=host, port=port, api=config, ui=False))
    return seen


@pytest.mark.parametrize("flags, host, port, ui", [
    ([], "127.0.0.1", 7860, True),
    (["--listen"], "0.0.0.0", 7860, True),
    (["--api"], "127.0.0.1", 7860, True),
    (["--nowebui"], "127.0.0.1", 7861, False),
    (["--nowebui", "--listen", "--port", "9000"], "0.0.0.0", 9000, False),
])
def test_bound_to_localhost_unless_listen(captured, data_dir, flags, host, port, ui):
    from webui.cli import main

    assert main(["--data-dir", str(data_dir), *flags]) == 0
    assert (captured["host"], captured["port"], captured["ui"]) == (host, port, ui)
    assert (captured["api"] is not None) == ("--api" in flags or "--nowebui" in flags)


def test_cmd_flags_never_show_passwords(captured, data_dir):
    from webui.cli import main

    assert main(["--data-dir", str(data_dir), "--api", "--api-auth", "u:topsecret", "--gradio-auth", "v:hidden"]) == 0
    config = captured["api"]
    assert config.credentials == {"u": "topsecret"} and captured["gradio_auth"] == [("v", "hidden")]
    assert "topsecret" not in str(config.flags) and "hidden" not in str(config.flags)
    assert config.flags["api"] is True and config.flags["data_dir"] == str(data_dir)


def test_cors_origins_are_allowed_only_when_named(manager, data_dir):
    origin = "http://localhost:3000"
    with start_api(manager, data_dir, cors=origin) as server:
        reply = requests.options(f"{server.url}/sdapi/v1/options", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert reply.headers.get("access-control-allow-origin") == origin
        other = requests.get(f"{server.url}/sdapi/v1/options", headers={"Origin": "http://evil.test"}, timeout=30)
        assert "access-control-allow-origin" not in other.headers


def test_openapi_docs_list_the_routes(api):
    schema = requests.get(f"{api}/openapi.json", timeout=30).json()
    assert "/sdapi/v1/txt2img" in schema["paths"] and "/sdapi/v1/progress" in schema["paths"]
    body = schema["components"]["schemas"]["StableDiffusionTxt2ImgProcessingAPI"]["properties"]
    assert body["steps"]["default"] == 50 and body["sampler_index"]["default"] == "Euler"
    assert requests.get(f"{api}/docs", timeout=30).status_code == 200


def test_api_log_writes_one_line_per_request(manager, data_dir, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="webui.api"), start_api(manager, data_dir, api_log=True) as server:
        requests.get(f"{server.url}/sdapi/v1/samplers", timeout=30)
        requests.post(f"{server.url}/sdapi/v1/txt2img", json={"width": 65}, timeout=30)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("API ")]
    assert lines[0].startswith("API GET /sdapi/v1/samplers 200 ") and lines[1].startswith("API POST /sdapi/v1/txt2img 422 ")
