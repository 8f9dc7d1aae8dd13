"""A session we end with a NOTIFICATION reaches a peer that is still sending: the speaker sends its
FIN behind the NOTIFICATION and keeps the socket for a moment instead of closing it with the peer's
data unread (which makes the kernel answer with a RST, and a peer busy writing then loses the
NOTIFICATION with its connection). Real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket

from bgp import fsm, speaker
from bgp.codec import Keepalive, Notification, decode, next_frame
from bgp.constants import ErrorCode, HeaderSubcode, MessageType
from bgp.speaker import Speaker

CFG = fsm.Config(65000, "198.19.255.254", 65000, hold_time=9, passive=True)
JUNK = b"\x01" * 300_000  # more than one read of the speaker: most of it stays unread in its socket


def flood_then_read(port: int) -> tuple[bytes, str]:
    """A peer that sends a broken header and a flood behind it, then reads until the end: what it got
    and how the connection ended ("eof" or the error)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.send(b"\x00" * 19 + JUNK)  # a marker of zeros: Connection Not Synchronized
        sock.settimeout(5)
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError as exc:
                return got, type(exc).__name__
            if not chunk:
                return got, "eof"
            got += chunk
    finally:
        sock.close()


def test_a_notification_then_fin_not_a_reset(monkeypatch):
    monkeypatch.setattr(speaker, "NOTIFY_LINGER", 0.5)

    async def main():
        writers: list[asyncio.StreamWriter] = []

        async def accept(reader, writer):
            writers.append(writer)
            Speaker(CFG, "127.0.0.1").attach(reader, writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            got, end = await asyncio.to_thread(flood_then_read, port)
            assert end == "eof", f"the connection ended with {end}, not our FIN"
            kinds, notes, buf = [], [], got
            while True:
                frame, buf = next_frame(buf)
                if frame is None:
                    break
                kinds.append(frame[18])
                msg = decode(frame)
                if isinstance(msg, Notification):
                    notes.append((msg.code, msg.subcode))
            assert kinds == [MessageType.OPEN, MessageType.NOTIFICATION]
            assert notes == [(ErrorCode.MESSAGE_HEADER, HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED)]
            # the socket does not stay: it goes after the linger
            await asyncio.sleep(0.8)
            assert writers[0].transport.is_closing()
        finally:
            server.close()

    asyncio.run(main())


def test_a_peer_that_takes_nothing_is_aborted_after_the_linger(monkeypatch):
    """Our NOTIFICATION cannot even be sent (the peer reads nothing and its window is full): the
    transport is aborted when the linger ends, not kept waiting for the peer."""

    async def main():
        ours, theirs = socket.socketpair()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            _, writer = await asyncio.open_connection(sock=ours)
            writer.write(b"\xff" * 2_000_000)  # far more than the peer's buffers take
            assert writer.transport.get_write_buffer_size() > 0
            speaker.close_after_notification(writer, linger=0.2)
            assert not writer.transport.is_closing()
            await asyncio.sleep(0.4)
            assert writer.transport.is_closing()
        finally:
            theirs.close()

    asyncio.run(main())


def test_the_lingering_connection_no_longer_speaks_for_the_session(monkeypatch):
    """We end a session with a NOTIFICATION and connect again (the retry timer, 2 s) while the old
    connection still lingers: what the old peer sends then, and its close, are not the new session's."""
    monkeypatch.setattr(speaker, "NOTIFY_LINGER", 4.0)

    async def main():
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        arrived = asyncio.Event()

        async def accept(reader, writer):
            conns.append((reader, writer))
            arrived.set()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        spk = Speaker(fsm.Config(65000, "198.19.255.1", 65000, hold_time=9), "127.0.0.1", port=port)
        try:
            spk.start()
            await asyncio.wait_for(arrived.wait(), 5)
            arrived.clear()
            first = conns[0][1]
            first.write(Keepalive().encode())  # before our OPEN was answered: FSM error, NOTIFICATION
            await asyncio.wait_for(arrived.wait(), 5)  # the new connection, while the first lingers
            assert len(conns) == 2 and spk.session.state is fsm.State.OPEN_SENT
            first.write(Keepalive().encode())  # the new session is in OpenSent: this would be an FSM error
            first.close()  # and the old connection's end a TCP down
            await asyncio.sleep(0.5)
            assert spk.session.state is fsm.State.OPEN_SENT
            assert spk.session.counters["notifications_out"] == 1
        finally:
            await spk.stop()
            server.close()

    asyncio.run(main())


def test_the_linger_outlives_the_session_dropping_its_writer():
    """The session lets go of its writer at once; a StreamWriter nobody holds closes its transport when
    collected (Python 3.11.5 on), which would turn the linger into the immediate close it replaces."""

    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            transport = writer.transport
            speaker.close_after_notification(writer, linger=0.3)
            del writer
            gc.collect()
            assert not transport.is_closing()
            await asyncio.sleep(0.5)
            assert transport.is_closing()
        finally:
            server.close()

    asyncio.run(main())
