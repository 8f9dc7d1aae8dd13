"""A controller channel hub for tests, run inside a namespace: configs from a JSON file
({serial: [generation, config]}), re-read and pushed on SIGHUP; results appended to a file."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from controller.channel_server import ChannelHub


async def main(listen: str, pki: Path, configs: Path, results: Path) -> None:
    def lookup(serial: str):
        doc = json.loads(configs.read_text()).get(serial)
        return (doc[0], doc[1]) if doc else None

    hub = ChannelHub(lookup)
    app = web.Application()
    hub.add_routes(app)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    runner = web.AppRunner(app)
    await runner.setup()
    host, port = listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port), ssl_context=ctx).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: [loop.create_task(hub.push(s)) for s in list(hub.sessions)])
    print("hub up", flush=True)
    while not stop.is_set():
        out = {s: [r.model_dump() for r in sess.results] for s, sess in hub.sessions.items()}
        results.write_text(json.dumps(out))
        await asyncio.sleep(0.1)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
