"""What a gateway reports every 30 s over the channel: validated by the same wire model as everything."""

from pathlib import Path

from nsg.channel import wire
from nsg.daemon import Daemon


def test_telemetry_frame_is_valid():
    d = Daemon(None, Path("/nonexistent"), lambda: None)
    d.counters["applies"] = 3
    d.generation = 7
    frame = d._telemetry()
    assert isinstance(frame, wire.Telemetry)
    assert frame.counters["daemon.applies"] == 3 and frame.counters["generation"] == 7
    again = wire.decode(wire.encode(frame))
    assert again == frame
