"""The admin API's HTTP plumbing: reading a request body (its media type, strict validation, hostile
input as the client's 400), writing answers and errors, and the error and bearer-token middlewares.
controller/api.py has the handlers and the route table."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from controller.api_models import Error, ErrorBody
from controller.channel_server import ChannelHub
from controller.security_events import SecurityEvents
from controller.store import Store, StoreError
from controller.store_tokens import Verdict
from nsg.model import ConfigError

log = logging.getLogger("controller.api")

API = "/api/v1"  # every admin route is below it

JSON = "application/json"
STATUS = {"invalid": 400, "bad_json": 400, "unauthorized": 401, "not_found": 404, "conflict": 409}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})


# -- plumbing ------------------------------------------------------------------------------------

STORE = web.AppKey("store", Store)
AUTH: web.AppKey[Callable[[str], Verdict]] = web.AppKey("auth")  # is this bearer token good?
HUB: web.AppKey[ChannelHub | None] = web.AppKey("hub")  # the device site's channel: live gateway state
IMAGES: web.AppKey[Any] = web.AppKey("images")  # Path of the image tarballs, or None: no device site
BUNDLES: web.AppKey[Any] = web.AppKey("bundles")  # Path of the upgrade bundles, or None: no device site
RELEASE_KEYS: web.AppKey[Any] = web.AppKey("release_keys")  # what verifies bundles (serve --release-keys), or None
SECURITY = web.AppKey("security", SecurityEvents)  # security events about gateways (the hub's, if any)


@dataclass(frozen=True)
class Route:
    """One operation of the admin API (controller/api.py's ROUTES: the router and the OpenAPI document)."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.Response]]
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    raw: str | None = None  # the body is not JSON but this media type


def _loc(loc: tuple[int | str, ...]) -> str | None:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-"):
            out += ("." if out else "") + part
    return out or None


def check_media(request: web.Request, want: str) -> None:
    """A body is read only as the media type the route documents (415 otherwise, RFC 9110 15.5.16)."""
    given = request.headers.get("Content-Type")
    charset = request.charset
    if given is None or request.content_type != want or (want == JSON and charset not in (None, "utf-8")):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as 'Content-Type: {want}'" + (f", not {given!r}" if given else ""))


async def read_body(request: web.Request, model: type[BaseModel]) -> Any:
    """The body as ``model``, validated strictly: JSON types as they are (no true -> 1, no "100" -> 100).
    pydantic's own JSON parser reads it: it bounds nesting and number sizes, so a hostile body is the
    client's error (400), not a ValueError or RecursionError of ours (500)."""
    check_media(request, JSON)
    raw = await request.read()
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        if errors[0]["type"] == "json_invalid":
            reason = str(errors[0].get("ctx", {}).get("error") or errors[0]["msg"])
            raise ApiError(400, "bad_json", f"the request body is not JSON: {reason}") from None
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        msg = errors[0]["msg"].removeprefix("Value error, ")
        raise ApiError(400, "invalid", msg + more, _loc(errors[0]["loc"])) from None
    except (ValueError, RecursionError) as exc:  # whatever else a parser or validator says of hostile input
        raise ApiError(400, "bad_json", f"the request body cannot be read: {type(exc).__name__}: {exc}") from None


def answer(model: BaseModel, status: int = 200, location: str | None = None) -> web.Response:
    headers = {"Location": location} if location else None
    return web.json_response(text=model.model_dump_json(), status=status, headers=headers)


def _error(status: int, code: str, message: str, field: str | None = None,
           headers: Mapping[str, str] | None = None) -> web.Response:
    body = Error(error=ErrorBody(code=code, message=message, field=field))
    return web.json_response(text=body.model_dump_json(), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message, exc.field, exc.headers)
    except StoreError as exc:
        return _error(STATUS[exc.kind], exc.kind, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
    except ConfigError as exc:  # the store refuses writes that do not render; this is our fault
        log.error("%s %s: stored state does not render: %s", request.method, request.path, exc)
        return _error(500, "render_failed", "the stored enterprise does not render; see the controller log")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal", "internal error; see the controller log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    verdict = request.app[AUTH](token) if scheme.lower() == "bearer" and token else "unknown"
    if verdict == "expired":  # RFC 6750 section 3.1: invalid_token, and why
        raise ApiError(401, "unauthorized", "token expired; `nsg-controller token create` makes a new one",
                       headers={"WWW-Authenticate": 'Bearer realm="nsg-controller", error="invalid_token", '
                                                    'error_description="token expired"'})
    if verdict != "valid":
        raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is needed",
                       headers={"WWW-Authenticate": 'Bearer realm="nsg-controller"'})
    return await handler(request)
