"""Issue 23 sections 2 and 3: what one box (b1, with its own valid LDevID) can do to the controller over the
management channel. The controller's real device site and store on 127.0.0.1; b1 speaks the channel by hand.

- A slow reader delays nobody: b1 floods junk and never reads its answers; a config change still reaches 100
  other gateways in their normal time, and b1 is closed and counted.
- What a session keeps is bounded: events (count, size, depth), apply results, telemetry.
- No frame crashes the handler: a 5,000-digit number, 5,000-deep nesting, an error reply that would be
  longer than an error frame holds; and should a frame ever find a bug, the session is closed and removed.
- Lies are refused: results for generations never sent, counters negative, too large or backwards.
- The frame limit is what docs/channel.md says, on both ends: 8 MiB passes, one octet more is refused with an
  error naming the size.
"""

from __future__ import annotations

import asyncio
import json
import logging

from controller.channel_server import ChannelHub
from nsg.channel import wire
from nsg.channel.client import ChannelClient
from tests.unit.channel.test_channel import client_ctx, pki, start  # noqa: F401 - pki is a fixture
from tests.unit.controller.fake_gateways import (
    RawGateway,
    admin_api,
    device_site,
    ldevid_context,
    make_store,
    until,
)

B1 = "NSG-B1"
PEERS = 100
ROUNDS = 10


def padded(msg: wire._Msg, size: int) -> str:
    """``msg`` as JSON of exactly ``size`` octets (whitespace before its closing brace)."""
    text = wire.encode(msg)
    return text[:-1] + " " * (size - len(text)) + "}"


def test_a_gateway_that_does_not_read_delays_no_other_gateway(tmp_path, capsys):
    """b1 sends junk and never reads the answers; its socket to the controller fills. A config change for all
    still reaches the 100 others in the time it takes without b1, and b1 is closed and counted."""
    enterprises = {f"e{i}": [(f"g{i}-{j}", f"NSG-{i}-{j}") for j in range(10)] for i in range(10)}
    enterprises["e0"].insert(0, ("b1", B1))
    store = make_store(tmp_path / "ctl.db", enterprises)
    # b1's enterprise has a firewall of 800 entries: its config (~90 KB) is more than a WebSocket writes
    # before it waits for the socket to drain (64 KiB), as a real enterprise's is
    store.documents.set_policy("e0", {"tenants": [{"name": "corp", "subnets": ["corp"], "default": "drop", "acl": [
        {"name": f"r{i}", "dst": f"198.51.100.{i % 250}/32", "protocol": "tcp", "dst_ports": [1000 + i],
         "action": "allow"} for i in range(800)]}]})
    serials = [s for gws in enterprises.values() for _, s in gws if s != B1]
    assert len(serials) == PEERS

    async def main():
        async with device_site(store, tmp_path) as svc:
            hub = svc.hub
            b1 = RawGateway(svc, ldevid_context(svc, tmp_path / "certs", B1), B1)
            await b1.connect()  # first in line: a push loop that goes gateway by gateway meets b1 first
            latest: dict[str, int] = {}

            def gateway(serial):
                async def on_config(msg):
                    latest[serial] = msg.generation
                    return wire.ApplyResult(generation=msg.generation, ok=True, running=msg.generation)

                ctx = ldevid_context(svc, tmp_path / "certs", serial)
                return ChannelClient(f"wss://127.0.0.1:{svc.port}/channel", lambda: ctx, serial, on_config,
                                     lambda: 0, backoff=(0.05, 0.5))

            tasks = [asyncio.create_task(gateway(s).run()) for s in serials]
            try:
                await until(lambda: len(latest) == PEERS, timeout=60)

                async def change_for_all() -> float:
                    for ent in enterprises:
                        store.enterprises.add_subnet(ent, f"s{store.enterprises.get(ent).generation}",
                                                     vni=5000 + store.enterprises.get(ent).generation,
                                                     cidr=f"10.{int(ent[1:])}.{store.enterprises.get(ent).generation}"
                                                          ".0/24",
                                                     gateway=f"10.{int(ent[1:])}."
                                                             f"{store.enterprises.get(ent).generation}.1")
                    want = {e: store.enterprises.get(e).generation for e in enterprises}
                    wanted = {s: want[e] for e, gws in enterprises.items() for _, s in gws if s != B1}
                    return await until(lambda: all(latest.get(s) == g for s, g in wanted.items()), timeout=30)

                normal = await change_for_all()
                # b1 stops reading and floods: every junk frame is answered with an error frame it never reads,
                # until the controller stops taking its frames (its answers fill the socket, or it is not read)
                sent = [0]
                junk = asyncio.create_task(flood(b1, sent))
                start = asyncio.get_running_loop().time()
                await stalled(sent)
                stopped = asyncio.get_running_loop().time() - start
                # change after change (every push adds to what waits for b1): none may wait for b1
                slowed = []
                for n in range(ROUNDS):
                    try:
                        slowed.append(await change_for_all())
                    except AssertionError:
                        raise AssertionError(f"change {n + 1} after b1 stopped reading did not reach the "
                                             f"{PEERS} gateways within 30 s") from None
                with capsys.disabled():
                    print(f"\nconfig change reached {PEERS} gateways in {normal:.2f} s; with b1 not reading: "
                          f"{min(slowed):.2f} to {max(slowed):.2f} s ({ROUNDS} changes)")
                assert max(slowed) < max(3.0, 3 * normal), (normal, slowed)
                closed = (stopped + sum(slowed) +
                          await until(lambda: hub.counters.get("slow_readers", 0) == 1, timeout=20))
                await until(lambda: B1 not in hub.sessions)
                with capsys.disabled():
                    print(f"b1 closed as a slow reader {closed:.1f} s after it began its flood")
                junk.cancel()
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await b1.close()
            return normal, slowed, dict(hub.counters)

    _, _, counters = asyncio.run(main())
    assert counters["slow_readers"] == 1
    store.close()


JUNK = json.dumps({"type": "telemetry", "ts": 1, "counters": {"k" * 3000: [1]}})  # answered with ~3 KB


async def flood(gw: RawGateway, sent: list[int]) -> None:
    """Junk whose every answer is about as large (each bad frame is answered), and a telemetry frame now
    and then, as b1 did."""
    try:
        while True:
            for _ in range(100):
                await gw.send(JUNK)
                sent[0] += 1
            await gw.send({"type": "telemetry", "ts": 1.0, "counters": {}})
    except ConnectionError:  # closed by the controller
        return


async def stalled(sent: list[int], quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Until the flood has not got a frame out for ``quiet`` seconds: the controller takes no more."""
    loop = asyncio.get_running_loop()
    start, last, when = loop.time(), -1, loop.time()
    while loop.time() - when < quiet:
        assert loop.time() - start < timeout, "the flood never stalled"
        if sent[0] != last:
            last, when = sent[0], loop.time()
        await asyncio.sleep(0.05)


def one_box(tmp_path):
    return make_store(tmp_path / "ctl.db", {"acme": [("b1", B1), ("b2", "NSG-B2")]})


def test_what_a_session_keeps_is_bounded(tmp_path):
    store = one_box(tmp_path)

    async def main():
        async with device_site(store, tmp_path) as svc, admin_api(store, svc) as api:
            b1 = RawGateway(svc, ldevid_context(svc, tmp_path / "certs", B1), B1)
            generation = (await b1.connect())["generation"]
            session = svc.hub.sessions[B1]
            # an event's detail: 8 MiB of {"a":[{},{},...]} once took 193 MiB; deep nesting; neither is kept
            big = {"type": "event", "ts": 1.0, "kind": "note", "detail": {"a": [{}] * 200_000}}
            deep = {"type": "event", "ts": 1.0, "kind": "note", "detail": {"a": [[[[1]]]]}}
            refused = []
            for frame in (big, deep):
                await b1.send(frame)
                refused.append(await b1.recv())
            for i in range(500):
                await b1.send({"type": "event", "ts": 1.0, "kind": "note", "detail": {"i": i, "x": "y" * 3000}})
            # results: every one used to be kept (362,600 in 20 s)
            for _ in range(1000):
                await b1.send({"type": "apply_result", "generation": generation, "ok": True, "running": generation})
            await b1.send({"type": "telemetry", "ts": 2.0, "counters": {"done": 1}})
            await until(lambda: session.telemetry is not None and session.telemetry.ts == 2.0)
            events, results = list(session.events), list(session.results)
            status, doc, size = await api("/gateways/b1/status")
            await b1.close()
            return refused, events, results, status, doc, size

    refused, events, results, status, doc, size = asyncio.run(main())
    assert [r["type"] for r in refused] == ["error", "error"], refused
    assert "octets as JSON" in refused[0]["message"] and "nested more than 4" in refused[1]["message"], refused
    assert len(events) == 64 and events[-1].detail["i"] == 499  # the last ones
    assert sum(len(e.model_dump_json()) for e in events) < 64 * (wire.MAX_DETAIL + 200)
    assert len(results) == 16
    assert status == 200 and doc["connected"] and size < 16_384
    store.close()


CRASHES = {
    "a 5,000-digit number": ('{"type":"telemetry","ts":1,"counters":{"x":' + "9" * 5000 + "}}", "not-json"),
    "5,000-deep nesting": ('{"type":"event","ts":1,"kind":"k","detail":{"a":' + "[" * 5000 + "]" * 5000 + "}}",
                           "not-json"),
    "an error longer than an error frame": (json.dumps({"type": "telemetry", "ts": 1, "counters": {"k" * 5000: [1]}}),
                                            "invalid"),
}


def test_no_frame_crashes_the_handler_and_a_closed_session_is_gone(tmp_path, caplog):
    store = one_box(tmp_path)

    async def main():
        async with device_site(store, tmp_path) as svc, admin_api(store, svc) as api:
            hub = svc.hub
            ctx = ldevid_context(svc, tmp_path / "certs", B1)
            seen = {}
            for n, (what, (frame, _)) in enumerate(CRASHES.items()):
                b1 = RawGateway(svc, ctx, B1)
                await b1.connect()
                await b1.send(frame)
                answer = await b1.recv()
                try:  # the session goes on: the next frame is taken
                    await b1.send({"type": "telemetry", "ts": 3.0 + n, "counters": {"still": n}})
                    alive = await reached(lambda n=n: B1 in hub.sessions and hub.sessions[B1].telemetry is not None
                                          and hub.sessions[B1].telemetry.ts == 3.0 + n)
                except ConnectionError:
                    alive = False
                status = (await api("/gateways/b1/status"))[1]
                await b1.close()
                gone = await reached(lambda: B1 not in hub.sessions, 5)
                shown = (await api("/gateways/b1/status"))[1]["connected"]
                seen[what] = {"answer": (answer.get("type"), answer.get("code")),
                              "short": len(answer.get("message", "")) <= 4096,
                              "went on": alive and status["connected"], "gone once closed": gone and not shown}

            # should a frame ever find a bug of ours: that session is closed (1011) and removed, logged once
            def bug(*_args):
                raise RuntimeError("a bug a frame found")

            hub._take = bug
            b1 = RawGateway(svc, ctx, B1)
            await b1.connect()
            await b1.send({"type": "telemetry", "ts": 9.0, "counters": {}})
            closed = await b1.recv()
            bug_gone = await reached(lambda: B1 not in hub.sessions, 5)
            after_bug = (await api("/gateways/b1/status"))[1]
            await b1.close()
            return seen, closed, bug_gone, after_bug, dict(hub.counters)

    seen, closed, bug_gone, after_bug, counters = asyncio.run(main())
    assert seen == {what: {"answer": ("error", code), "short": True, "went on": True, "gone once closed": True}
                    for what, (_, code) in CRASHES.items()}
    assert closed["type"] == "ws-close" and closed["data"] == 1011, closed
    assert bug_gone and not after_bug["connected"] and counters["handler_errors"] == 1
    tracebacks = [r for r in caplog.records if r.exc_info and "channel session failed" in r.getMessage()]
    assert len(tracebacks) == 1
    assert not any("push failed" in r.getMessage() for r in caplog.records)
    store.close()


async def reached(pred, timeout: float = 3.0) -> bool:
    try:
        await until(pred, timeout)
    except AssertionError:
        return False
    return True


def test_lies_are_refused_and_change_nothing(tmp_path):
    store = one_box(tmp_path)

    async def main():
        async with device_site(store, tmp_path) as svc, admin_api(store, svc) as api:
            hub = svc.hub
            b1 = RawGateway(svc, ldevid_context(svc, tmp_path / "certs", B1), B1)
            gen = (await b1.connect())["generation"]
            await b1.send({"type": "apply_result", "generation": gen, "ok": True, "running": gen})
            assert (await b1.recv()) == {"type": "confirm", "generation": gen}
            answers = []
            lies = [
                {"type": "apply_result", "generation": 999999, "ok": True, "running": 999999},  # never sent
                {"type": "apply_result", "generation": gen, "ok": True, "running": 999999},
                {"type": "apply_result", "generation": 999999, "ok": False, "rolled_back": True, "running": gen},
                {"type": "telemetry", "ts": 5.0, "counters": {"esp.rx": -1}},
                {"type": "telemetry", "ts": 5.0, "counters": {"esp.rx": 1e30}},
                {"type": "telemetry", "ts": 5.0, "counters": {"app.web.error": "x" * 6_000_000}},
                {"type": "policy_counters", "ts": 5.0, "generation": gen, "counters": {"acl.t.e": [-5, 0]}},
            ]
            for lie in lies:
                await b1.send(lie)
                answers.append(await b1.recv())
            await b1.send({"type": "policy_counters", "ts": 6.0, "generation": gen, "counters": {"acl.t.e": [10, 900]}})
            await b1.send({"type": "policy_counters", "ts": 7.0, "generation": gen, "counters": {"acl.t.e": [3, 100]}})
            answers.append(await b1.recv())
            _, doc, size = await api("/gateways/b1/status")
            counters = (await api("/gateways/b1/policy/counters"))[1]
            await b1.close()
            return gen, answers, doc, size, counters, dict(hub.counters)

    gen, answers, doc, size, policy, counters = asyncio.run(main())
    codes = [(a["type"], a.get("code")) for a in answers]
    assert codes == [("error", "generation")] * 3 + [("error", "invalid")] * 5, answers
    assert "never sent" in answers[0]["message"] and "never issued" in answers[2]["message"]
    assert "went backwards" in answers[-1]["message"]
    assert doc["applied_generation"] == gen and doc["rolled_back_generation"] is None
    assert doc["telemetry_at"] is None and size < 16_384
    assert policy["counters"] == {"acl.t.e": {"packets": 10, "bytes": 900}}
    assert counters["results_refused"] == 3 and counters["counters_backwards"] == 1
    store.close()


def test_the_frame_limit_is_8_mib_on_the_controller(tmp_path):
    store = one_box(tmp_path)

    async def main():
        async with device_site(store, tmp_path) as svc:
            hub = svc.hub
            b1 = RawGateway(svc, ldevid_context(svc, tmp_path / "certs", B1), B1)
            await b1.connect()
            await b1.send(padded(wire.Telemetry(ts=8.0, counters={"n": 1}), wire.MAX_FRAME))
            await until(lambda: B1 in hub.sessions and hub.sessions[B1].telemetry is not None, timeout=20)
            await b1.send(padded(wire.Telemetry(ts=9.0, counters={"n": 2}), wire.MAX_FRAME + 1))
            answer = await b1.recv(timeout=20)
            await b1.send({"type": "telemetry", "ts": 10.0, "counters": {}})
            await until(lambda: hub.sessions[B1].telemetry.ts == 10.0)
            await b1.close()
            return answer, dict(hub.counters)

    answer, counters = asyncio.run(main())
    assert answer["type"] == "error" and answer["code"] == "too-large", answer
    assert f"{wire.MAX_FRAME + 1} octets (limit {wire.MAX_FRAME})" in answer["message"]
    assert counters["frames_too_large"] == 1
    store.close()


def test_the_frame_limit_is_8_mib_on_the_gateway_and_the_controller_never_sends_more(pki, caplog):  # noqa: F811
    configs = {"NSG-1": (3, {"schema_version": 1})}
    confirmed: list[int] = []

    async def on_config(msg):
        return wire.ApplyResult(generation=msg.generation, ok=True, running=msg.generation)

    async def on_confirm(generation):
        confirmed.append(generation)

    async def main():
        hub = ChannelHub(configs.get)
        runner, port = await start(hub, pki)
        client = ChannelClient(f"wss://127.0.0.1:{port}/channel", lambda: client_ctx(pki), "NSG-1", on_config,
                               lambda: 0, backoff=(0.05, 0.2), on_confirm=on_confirm)
        task = asyncio.create_task(client.run())
        try:
            await until(lambda: confirmed == [3])
            ws = hub.sessions["NSG-1"].ws
            await ws.send_str(padded(wire.Confirm(generation=7), wire.MAX_FRAME))
            await until(lambda: confirmed == [3, 7], timeout=20)
            await ws.send_str(padded(wire.Confirm(generation=8), wire.MAX_FRAME + 1))
            await until(lambda: client.stats["bad_frames"] == 1, timeout=20)
            await until(lambda: any("gateway says" in r.getMessage() for r in caplog.records))
            # a config the store let grow beyond the limit is not sent (and said so), the session goes on
            configs["NSG-1"] = (4, {"schema_version": 1, "pad": "x" * wire.MAX_FRAME})
            pushed = await hub.push("NSG-1")
            return pushed, client.connected, client.stats["connects"], dict(hub.counters)
        finally:
            task.cancel()
            await runner.cleanup()

    with caplog.at_level(logging.INFO):
        pushed, connected, connects, counters = asyncio.run(main())
    said = [r for r in caplog.records if "gateway says" in r.getMessage()]
    assert f"frame of {wire.MAX_FRAME + 1} octets (limit {wire.MAX_FRAME})" in said[0].getMessage()
    assert said[0].fields["code"] == "too-large"
    assert connected and connects == 1 and confirmed == [3, 7]
    assert not pushed and counters["configs_too_large"] == 1
    assert any("larger than the channel carries" in r.getMessage() for r in caplog.records)
