"""--api-auth: HTTP Basic on every API route. Credentials are "user:pass[,user2:pass2]" or a file holding them
(comma- or newline-separated), as A1111's --api-auth / --gradio-auth-path."""
from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from ..engine.errors import UserError


def parse_credentials(value: str | None) -> dict[str, str]:
    """{user: password}; a value naming an existing file is read from it. Raises UserError for an entry
    without a colon (the message does not repeat the password)."""
    if not value:
        return {}
    path = Path(value).expanduser()
    text = path.read_text(encoding="utf-8") if path.is_file() else value
    out = {}
    for entry in text.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        user, colon, password = entry.partition(":")
        if not colon or not user:
            raise UserError("credentials must be user:password, comma-separated (or a file of them)")
        out[user] = password
    return out


def basic_auth_dependency(credentials: dict[str, str]):
    """A FastAPI dependency answering 401 unless the request carries one of the credentials."""
    security = HTTPBasic(auto_error=False)

    def check(given: HTTPBasicCredentials | None = Depends(security)) -> None:
        if given is not None:
            expected = credentials.get(given.username)
            # compare even for an unknown user, so the time taken does not tell which users exist
            ok = secrets.compare_digest((expected or "").encode(), given.password.encode())
            if expected is not None and ok:
                return
        raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
    return check
