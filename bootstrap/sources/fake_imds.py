"""A fake AWS IMDSv2 for tests and labs (aiohttp), strict about sessions the way EC2 is:

* ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600),
  else 400; a request carrying ``X-Forwarded-For`` is refused with 403 (EC2 does this so a
  token cannot be fetched through a proxy);
* every ``GET`` needs a live token in ``X-aws-ec2-metadata-token``: none, unknown or
  expired -> 401;
* ``/latest/user-data`` is 404 when the instance has none.

Time comes from an injectable clock so tests can expire tokens without sleeping.

    python -m bootstrap.sources.fake_imds --listen 127.0.0.1 --port 0 --user-data doc.json

prints the base URL on stdout and serves until interrupted. Never point it at, or bind it
to, 169.254.169.254: that address belongs to the real cloud.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bootstrap.sources.imds import (
    INSTANCE_ID_PATH,
    MAX_TOKEN_TTL_S,
    TOKEN_HEADER,
    TOKEN_PATH,
    TTL_HEADER,
    USER_DATA_PATH,
)

DEFAULT_INSTANCE_ID = "i-0123456789abcdef0"


@dataclass
class FakeImds:
    user_data: bytes | None = None
    instance_id: str = DEFAULT_INSTANCE_ID
    clock: Callable[[], float] = time.monotonic
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry on ``clock``
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    url: str | None = field(default=None, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_put(TOKEN_PATH, self._token)
        app.router.add_get(USER_DATA_PATH, self._user_data)
        app.router.add_get(INSTANCE_ID_PATH, self._instance_id)
        app.router.add_get("/latest/meta-data/", self._index)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            self.log.append((request.method, request.path, exc.status))
            raise
        self.log.append((request.method, request.path, resp.status))
        return resp

    async def _token(self, request: web.Request) -> web.Response:
        if "X-Forwarded-For" in request.headers:
            raise web.HTTPForbidden(text="token requests through a proxy are refused")
        raw = request.headers.get(TTL_HEADER)
        if raw is None:
            raise web.HTTPBadRequest(text=f"missing {TTL_HEADER}")
        try:
            ttl = int(raw)
        except ValueError:
            raise web.HTTPBadRequest(text=f"{TTL_HEADER} is not an integer") from None
        if not 1 <= ttl <= MAX_TOKEN_TTL_S:
            raise web.HTTPBadRequest(text=f"{TTL_HEADER} must be 1..{MAX_TOKEN_TTL_S}")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock() + ttl
        return web.Response(text=token, headers={TTL_HEADER: str(ttl)})

    def _authorize(self, request: web.Request) -> None:
        token = request.headers.get(TOKEN_HEADER)
        expiry = self.tokens.get(token) if token else None
        if expiry is None or self.clock() >= expiry:
            raise web.HTTPUnauthorized(text="missing, unknown or expired token")

    async def _user_data(self, request: web.Request) -> web.Response:
        self._authorize(request)
        if self.user_data is None:
            raise web.HTTPNotFound()
        return web.Response(body=self.user_data, content_type="application/octet-stream")

    async def _instance_id(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.Response(text=self.instance_id)

    async def _index(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.Response(text="instance-id\n")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host``:``port`` (0 = ephemeral); returns the base URL."""
        if host.startswith("169.254."):
            raise ValueError("the fake IMDS must not take a link-local metadata address")
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _serve(args: argparse.Namespace) -> None:
    user_data = Path(args.user_data).read_bytes() if args.user_data else None
    fake = FakeImds(user_data=user_data, instance_id=args.instance_id)
    print(await fake.start(args.listen, args.port), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fake AWS IMDSv2 for tests and labs")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user-data", help="file served as /latest/user-data (404 without)")
    parser.add_argument("--instance-id", default=DEFAULT_INSTANCE_ID)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
