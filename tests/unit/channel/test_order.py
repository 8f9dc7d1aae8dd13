"""The channel's message order (nsg/channel/wire.py (its order machine)), both ends, as tables: every legal step, and
every other (state, direction, message type) refused with its code and fault, the state untouched."""

from __future__ import annotations

import itertools
import typing

import pytest

from nsg.channel import wire
from nsg.channel.wire import RECV, SEND, ChannelOrder, OrderError, Side, State

S, HS, HR, OP, C = State.START, State.HELLO_SENT, State.HELLO_RECEIVED, State.OPEN, State.CLOSED

# Written out independently of the module's table: what docs/channel.md and wire.py say may happen.
EXPECTED = {
    Side.GATEWAY: {
        (S, SEND, "hello"): HS,
        (HS, RECV, "hello"): OP,
        (HS, RECV, "error"): C,
        (OP, RECV, "config"): OP, (OP, RECV, "confirm"): OP, (OP, RECV, "error"): OP,
        (OP, SEND, "apply_result"): OP, (OP, SEND, "telemetry"): OP, (OP, SEND, "event"): OP,
        (OP, SEND, "policy_counters"): OP, (OP, SEND, "error"): OP,
    },
    Side.CONTROLLER: {
        (S, RECV, "hello"): HR,
        (S, SEND, "error"): C,
        (HR, SEND, "hello"): OP,
        (HR, SEND, "error"): C,
        (OP, RECV, "apply_result"): OP, (OP, RECV, "telemetry"): OP, (OP, RECV, "event"): OP,
        (OP, RECV, "policy_counters"): OP, (OP, RECV, "error"): OP,
        (OP, SEND, "config"): OP, (OP, SEND, "confirm"): OP, (OP, SEND, "error"): OP,
    },
}
# every message type of the wire format
TYPES = sorted(t.model_fields["type"].default for t in typing.get_args(typing.get_args(wire.Message)[0]))


def at(side: Side, state: State) -> ChannelOrder:
    m = ChannelOrder(side)
    m.state = state
    return m


def test_the_wire_types_are_the_ones_the_tables_know():
    assert TYPES == ["apply_result", "config", "confirm", "error", "event", "hello", "policy_counters",
                     "telemetry"]


@pytest.mark.parametrize(("side", "key"), [(side, key) for side, rows in EXPECTED.items() for key in rows])
def test_legal_steps(side, key):
    state, direction, kind = key
    m = at(side, state)
    step = m.send if direction == SEND else m.receive
    assert step(kind) is EXPECTED[side][key] and m.state is EXPECTED[side][key]


ILLEGAL = [(side, state, direction, kind)
           for side in Side for state, direction, kind in itertools.product(State, (SEND, RECV), TYPES)
           if (state, direction, kind) not in EXPECTED[side]]


@pytest.mark.parametrize(("side", "state", "direction", "kind"), ILLEGAL)
def test_everything_else_is_refused(side, state, direction, kind):
    m = at(side, state)
    with pytest.raises(OrderError) as info:
        (m.send if direction == SEND else m.receive)(kind)
    legal = {k for (_, d, k) in EXPECTED[side] if d == direction}
    assert info.value.code == ("order" if kind in legal else "direction")
    assert info.value.fault == ("local" if direction == SEND else "remote")
    assert isinstance(info.value, wire.ChannelProtocolError)  # the drivers catch and answer those
    assert m.state is state  # an illegal message changes nothing


def test_what_one_end_sends_the_other_receives():
    gw, ctl = EXPECTED[Side.GATEWAY], EXPECTED[Side.CONTROLLER]
    open_kinds = {side: {d: {k for (st, dd, k) in rows if st is OP and dd == d} for d in (SEND, RECV)}
                  for side, rows in ((Side.GATEWAY, gw), (Side.CONTROLLER, ctl))}
    assert open_kinds[Side.GATEWAY][SEND] == open_kinds[Side.CONTROLLER][RECV]
    assert open_kinds[Side.CONTROLLER][SEND] == open_kinds[Side.GATEWAY][RECV]


def test_whole_conversations():
    gw, ctl = ChannelOrder("gateway"), ChannelOrder("controller")
    for msg in (wire.Hello(versions=(1,), serial="NSG-1"), wire.Hello(versions=(1,)),
                wire.Config(generation=1, config={}), wire.ApplyResult(generation=1, ok=True, running=1),
                wire.Confirm(generation=1), wire.Telemetry(ts=1.0), wire.Error(code="x", message="y")):
        sender, receiver = (gw, ctl) if gw.may_send(msg) else (ctl, gw)
        sender.send(msg)
        receiver.receive(msg)
    assert gw.open and ctl.open
    # the gateway's hello refused: both ends close
    gw, ctl = ChannelOrder("gateway"), ChannelOrder("controller")
    gw.send("hello")
    ctl.receive("hello")
    ctl.send("error")
    gw.receive("error")
    assert gw.state is ctl.state is C


@pytest.mark.parametrize(("side", "steps", "code", "words"), [
    (Side.GATEWAY, [(RECV, "config")], "order", "nothing may be received now"),
    (Side.GATEWAY, [(SEND, "hello"), (RECV, "config")], "order", "expected hello or error"),
    (Side.GATEWAY, [(SEND, "hello"), (RECV, "hello"), (RECV, "hello")], "order", "'hello' from the controller"),
    (Side.GATEWAY, [(SEND, "hello"), (RECV, "hello"), (RECV, "telemetry")], "direction",
     "'telemetry' is not sent by the controller"),
    (Side.GATEWAY, [(SEND, "hello"), (RECV, "hello"), (SEND, "config")], "direction",
     "'config' is not sent by the gateway"),
    (Side.CONTROLLER, [(RECV, "config")], "direction", "'config' is not sent by the gateway"),
    (Side.CONTROLLER, [(RECV, "telemetry")], "order", "expected hello"),
    (Side.CONTROLLER, [(RECV, "hello"), (SEND, "config")], "order", "expected hello or error"),
])
def test_messages_say_what_was_wrong(side, steps, code, words):
    m = ChannelOrder(side)
    *ok, (direction, kind) = steps
    for d, k in ok:
        (m.send if d == SEND else m.receive)(k)
    with pytest.raises(OrderError, match=words) as info:
        (m.send if direction == SEND else m.receive)(kind)
    assert info.value.code == code
