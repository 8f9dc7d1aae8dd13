"""The daemon's local control socket: one JSON request line in, one JSON reply line out.

The socket lives in the state directory with mode 0600: only root (the daemon's
user) can ask. Requests: {"cmd": "status"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger("nsg.control")

SOCKET_NAME = "nsg.sock"
MAX_REQUEST = 64 * 1024

Handler = Callable[[dict], Awaitable[dict]]


class ControlError(RuntimeError):
    pass


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]):
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            reply = await self._dispatch(line)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        try:
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
        except json.JSONDecodeError:
            return {"ok": False, "error": "bad request: not JSON"}
        cmd = req.get("cmd") if isinstance(req, dict) else None
        handler = self.handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {sorted(self.handlers)}"}
        try:
            return {"ok": True, "result": await handler(req)}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}


def request(state_dir: Path, cmd: str, timeout: float = 10.0, **args: object) -> dict:
    """Ask the daemon of ``state_dir``. Raises ControlError when it cannot be reached."""
    path = state_dir / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(f"no nsg daemon is running for {state_dir} ({path}: {exc.strerror})") from None
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    try:
        reply = json.loads(buf)
    except json.JSONDecodeError:
        raise ControlError(f"daemon sent an unreadable reply ({len(buf)} bytes)") from None
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "daemon refused the request"))
    return reply["result"]
