"""Every carbon_ai_msgs message crosses a process boundary over real DDS with every field intact."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from msg_fill import differences, fill
from rclpy.qos import QoSProfile, ReliabilityPolicy

import carbon_ai_msgs.msg as msgs

TYPES = sorted(
    (getattr(msgs, n) for n in dir(msgs) if not n.startswith("_") and hasattr(getattr(msgs, n), "SLOT_TYPES")),
    key=lambda t: t.__name__,
)
CONTRACT = {"EngineTelemetry", "VehicleState", "CarbonEstimate", "GridIntensity", "RoutePlan", "LoadSchedule",
            "ActuatorCommand", "CarbonSummary"}


def test_every_design_contract_message_exists():
    assert CONTRACT <= {t.__name__ for t in TYPES}


@pytest.fixture(scope="module")
def echo_process(ros):
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("echo_messages.py"))])
    yield proc
    proc.terminate()
    assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("msg_type", TYPES, ids=lambda t: t.__name__)
def test_message_round_trip(echo_process, probe, msg_type):
    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    name = msg_type.__name__
    back = probe.collect(msg_type, f"roundtrip_back/{name}", qos)
    pub = probe.publisher(msg_type, f"roundtrip/{name}", qos)
    assert probe.wait_for_subscribers(pub, timeout_s=20), "echo process never subscribed"
    assert probe.wait_for_publishers(f"roundtrip_back/{name}", timeout_s=20)
    rng = random.Random(name)
    # finite random values, then every float NaN, then every float +inf: all must arrive bit-exact
    sent = [fill(msg_type, rng), fill(msg_type, rng, math.nan), fill(msg_type, rng, math.inf)]
    # The echo's subscription may match our publisher a moment after ours matched its: resend until back.
    assert probe.spin_until(lambda: _publish_if_quiet(pub, sent, back), timeout_s=20), f"no {name} came back"
    probe.spin_until(lambda: len(back) >= 3, timeout_s=10)
    for original in sent:
        assert any(not differences(original, got) for got in back), (
            f"{name} changed in transit: {differences(original, back[-1])[:5]}"
        )


def _publish_if_quiet(pub, sent, back) -> bool:
    if back:
        return True
    for m in sent:
        pub.publish(m)
    return False
