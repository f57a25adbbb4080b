"""Summaries that decode but no vehicle could have sent are refused by the fleet side, counted, logged once per
asset, and never stored."""

from __future__ import annotations

import dataclasses

from carbon_ai_nodes.commands.uplink_receive import Receiver
from carbon_ai_nodes.uplink.fleet_store import open_store
from carbon_ai_nodes.uplink.summary_codec import Summary, encode_batch
from carbon_ai_nodes.uplink.summary_plausibility import MAX_CLOCK_AHEAD_S, implausible_reason

NOW_S = 1.8e9
OK = Summary("van2", 7, NOW_S - 20, NOW_S - 10, 0.05, 0.02, 0.1, 0.0, 0.0, 10, 500)  # 10 s, 5 g/s, 36 km/h


def test_a_real_window_passes_and_each_impossible_one_is_named():
    assert implausible_reason(OK, NOW_S) == ""
    future = dataclasses.replace(OK, window_start_s=NOW_S + MAX_CLOCK_AHEAD_S + 10,
                                 window_end_s=NOW_S + MAX_CLOCK_AHEAD_S + 20)
    assert "after the receiver's clock" in implausible_reason(future, NOW_S)
    assert implausible_reason(dataclasses.replace(OK, co2_kg=60.0), NOW_S).startswith("co2_kg=60 in 10 s is over")
    assert implausible_reason(dataclasses.replace(OK, fuel_l=30.0), NOW_S).startswith("fuel_l=30")
    assert implausible_reason(dataclasses.replace(OK, distance_km=2.0), NOW_S).startswith("distance_km=2")
    audited = dataclasses.replace(OK, measured_s=10.0, measured_co2_kg=0.5, modelled_co2_kg=0.0, co2_sigma_kg=0.0)
    assert implausible_reason(audited, NOW_S) == ""  # a fully metered window
    assert implausible_reason(dataclasses.replace(audited, measured_co2_kg=60.0), NOW_S).startswith("measured_co2")
    assert implausible_reason(dataclasses.replace(audited, co2_sigma_kg=60.0), NOW_S).startswith("co2_sigma_kg=60")
    assert "longer than its 10 s window" in implausible_reason(dataclasses.replace(audited, measured_s=30.0), NOW_S)
    # a zero-length window is judged as 1 s long, not divided by zero
    instant = dataclasses.replace(OK, window_start_s=NOW_S - 10, co2_kg=4.0)
    assert implausible_reason(instant, NOW_S) == ""
    # a gap record carries no amounts: only its time is checked
    assert implausible_reason(dataclasses.replace(OK, co2_kg=1e6, gap="queue_overflow", lost_first=1,
                                                  lost_last=3), NOW_S) == ""


def test_the_receiver_refuses_them_counts_them_logs_once_and_stores_the_rest(tmp_path):
    lines: list[str] = []
    store = open_store(f"sqlite:///{tmp_path / 'fleet.db'}")
    r = Receiver(None, log=lines.append, store=store)
    good = [dataclasses.replace(OK, sequence=n, window_start_s=1e9 + 10 * n, window_end_s=1e9 + 10 * n + 10)
            for n in (1, 2, 4)]
    forged = [dataclasses.replace(good[0], sequence=3, window_start_s=1e9 + 30, window_end_s=1e9 + 40, co2_kg=90.0),
              dataclasses.replace(good[0], sequence=5, window_start_s=4e9, window_end_s=4e9 + 10)]
    assert r.handle("cai/v1/van2/s", encode_batch(sorted(good + forged[:1], key=lambda s: s.sequence)))
    assert r.handle("cai/v1/van2/s", encode_batch(forged[1:]))
    rows = store.rows(0, 5e9)
    store.close()
    assert [row["sequence"] for row in rows] == [1, 2, 4]
    assert r.implausible == 2 and r.new == 3
    refused = [line for line in lines if "refused summary" in line]
    assert refused == ["van2: refused summary 3: co2_kg=90 in 10 s is over 5 kg/s (further ones only counted)"]
