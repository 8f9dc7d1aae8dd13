"""What a gateway reports every 30 s over the channel: validated by the same wire model as everything."""

from pathlib import Path

from nsg.channel import wire
from nsg.daemon import Daemon
from nsg.model.status import QosStatus


def test_telemetry_frame_is_valid():
    d = Daemon(None, Path("/nonexistent"), lambda: None)
    d.counters["applies"] = 3
    d.generation = 7
    frame = d._telemetry()
    assert isinstance(frame, wire.Telemetry)
    assert frame.counters["daemon.applies"] == 3 and frame.counters["generation"] == 7
    again = wire.decode(wire.encode(frame))
    assert again == frame


def test_qos_class_counters_ride_along():
    d = Daemon(None, Path("/nonexistent"), lambda: None)
    stats = {"wan0": {"A": {"bytes": 1000, "packets": 3, "drops": 2, "overlimits": 9},
                      "H": {"bytes": 50, "packets": 1, "drops": 0, "overlimits": 0}}}
    frame = wire.decode(wire.encode(d._telemetry(QosStatus(classes=stats))))
    assert frame.counters["qos.wan0.A.bytes"] == 1000 and frame.counters["qos.wan0.A.drops"] == 2
    assert frame.counters["qos.wan0.H.bytes"] == 50 and "qos.wan0.A.packets" not in frame.counters
