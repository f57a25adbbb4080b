"""Real-time scheduling of the sensor -> actuator path: the CARBON_AI_RT_PRIORITY setting, the thread policy it
gives, and a node refusing a bad value with one line."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading

import pytest

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.ros.realtime import (
    CPU_LATENCY_ENV,
    RT_PRIORITY_ENV,
    cpu_latency_from_env,
    hold_cpu_wakeup_latency,
    rt_priority_from_env,
    set_thread_ordinary,
    set_thread_realtime,
)


@pytest.mark.parametrize("raw, expected", [("", 0), ("0", 0), (" 50 ", 50), ("99", 99)])
def test_priority_setting_is_read(monkeypatch, raw, expected):
    monkeypatch.setenv(RT_PRIORITY_ENV, raw)
    assert rt_priority_from_env() == expected


@pytest.mark.parametrize("raw", ["fifo", "100", "-1", "2.5"])
def test_bad_priority_names_the_variable_and_the_range(monkeypatch, raw):
    monkeypatch.setenv(RT_PRIORITY_ENV, raw)
    with pytest.raises(ConfigError, match=rf"{RT_PRIORITY_ENV}='{raw}': must be an integer from 1 to 99"):
        rt_priority_from_env()


def test_a_thread_runs_fifo_where_permitted_and_says_why_not_elsewhere():
    seen = {}

    def worker() -> None:
        seen["refused"] = set_thread_realtime(10)
        seen["policy"] = os.sched_getscheduler(0)
        set_thread_ordinary()
        seen["after"] = os.sched_getscheduler(0)

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the calling thread only
    if seen["refused"] is None:
        assert seen["policy"] == os.SCHED_FIFO and seen["after"] == os.SCHED_OTHER
    else:  # no CAP_SYS_NICE here: ordinary scheduling, and a message saying what is missing
        assert seen["policy"] == os.SCHED_OTHER and "CAP_SYS_NICE" in seen["refused"]
    assert set_thread_realtime(0) is None and os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_node_given_a_bad_priority_exits_with_one_line():
    env = {**os.environ, RT_PRIORITY_ENV: "high"}
    out = subprocess.run([sys.executable, "-m", "carbon_ai_nodes.planning.ros.grid_publisher_node"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"could not start: {RT_PRIORITY_ENV}='high': must be an integer from 1 to 99 (SCHED_FIFO), or 0 for off"]


def test_cpu_latency_setting_is_read_and_checked(monkeypatch):
    monkeypatch.delenv(CPU_LATENCY_ENV, raising=False)
    assert cpu_latency_from_env() is None
    monkeypatch.setenv(CPU_LATENCY_ENV, "0")
    assert cpu_latency_from_env() == 0
    monkeypatch.setenv(CPU_LATENCY_ENV, "-5")
    with pytest.raises(ConfigError, match=rf"{CPU_LATENCY_ENV}='-5': must be an integer number of microseconds"):
        cpu_latency_from_env()


def test_the_wakeup_latency_request_is_written_and_held_or_refused_with_the_reason(tmp_path):
    device = tmp_path / "cpu_dma_latency"  # stands in for /dev/cpu_dma_latency: same 32-bit native int
    assert hold_cpu_wakeup_latency(None, str(device)) is None and not device.exists()
    assert hold_cpu_wakeup_latency(20, str(device)) is None
    assert struct.unpack("i", device.read_bytes()) == (20,)
    refused = hold_cpu_wakeup_latency(0, str(tmp_path / "no" / "such" / "device"))
    assert refused and "needs root or write access" in refused
