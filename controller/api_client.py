"""The admin API from the command line: a small HTTP client (urllib, no proxies) whose errors are
``CliError`` with the controller's message, field and code in them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from controller import cli_auth

API = "/api/v1"


class CliError(Exception):
    """Something the operator can fix; ``status`` is the exit status (2: bad input, 1: otherwise)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class Client:
    """The admin API over plain HTTP (loopback for now). Proxies from the environment are ignored."""

    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: object = None, *, raw: Any = None,
             content_type: str = "application/json") -> Any:
        """``body`` goes as JSON; ``raw`` (bytes or a file opened for reading) as is."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + API + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise api_error(exc.code, exc.reason, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the controller at {self.url}: {reason}", 1) from None
        try:
            return json.loads(raw) if raw else None
        except (ValueError, RecursionError) as exc:
            raise CliError(f"the controller at {self.url} answered with something that is not JSON: {exc}", 1) from None


def api_error(status: int, reason: str, raw: bytes) -> CliError:
    try:
        err = json.loads(raw)["error"]
        text = f"{err['field']}: {err['message']}" if err.get("field") else err["message"]
        code = err["code"]
    except (ValueError, KeyError, TypeError):
        return CliError(f"HTTP {status} {reason}", 2 if status < 500 else 1)
    if status == 401:
        text += f" ({cli_auth.REFUSED_HINT})"
    return CliError(f"{text} [{code}]", 2 if status < 500 else 1)
