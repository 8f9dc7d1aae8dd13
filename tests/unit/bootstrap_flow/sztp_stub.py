"""A bootstrap server of someone else's making, for the flow tests: on loopback TLS, it answers
get-bootstrapping-data with whatever the test hands it (e.g. unsigned redirect information, which
RFC 8572 section 7.3 allows a server to return even to a device that asked for signed data) and
keeps every input and progress report it receives."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bootstrap import sztp_data
from bootstrap.sztp import GET_PATH, MEDIA, MODULE, REPORT_PATH
from controller.est_server import server_ssl_context


@dataclass
class StubServer:
    info: sztp_data.ConveyedInfo             # conveyed unsigned
    reporting_level: str | None = None
    inputs: list[dict] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _get(self, request: web.Request) -> web.Response:
        self.inputs.append(json.loads(await request.read())[f"{MODULE}:input"])
        out: dict[str, object] = {"conveyed-information": base64.b64encode(
            sztp_data.encode_unsigned_conveyed(self.info)).decode()}
        if self.reporting_level is not None:
            out["reporting-level"] = self.reporting_level
        return web.Response(text=json.dumps({f"{MODULE}:output": out}), content_type=MEDIA)

    async def _report(self, request: web.Request) -> web.Response:
        self.reports.append(json.loads(await request.read())[f"{MODULE}:input"]["progress-type"])
        return web.Response(status=204)

    async def start(self, w, cert: tuple[Path, Path] | None = None) -> StubServer:
        """Serve with ``cert`` (certificate file, key file), by default the world's loopback server
        certificate (issued by w["ca"])."""
        app = web.Application()
        app.router.add_post(GET_PATH, self._get)
        app.router.add_post(REPORT_PATH, self._report)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        certfile, keyfile = cert or (w["tmp"] / "server.pem", w["tmp"] / "server.key")
        ctx = server_ssl_context(certfile, keyfile, [w["maker"][1]])
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
