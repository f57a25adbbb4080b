"""CSB3: the measured/modelled split, model ids, emission factor and uncertainty of each summary, from the window
core through the payload; older payloads (CSB1, CSB2) still decode, hostile CSB3 payloads are refused."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_ai_nodes.carbon.emission_model import FUEL_CO2_G_PER_L
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.uplink.summary_codec import VERSION_AUDIT, Summary, decode_batch, encode_batch
from carbon_ai_nodes.uplink.summary_window import EstimateSample, StateSample, SummaryWindow, factor_label

T0 = 1_800_000_000.0
DIESEL = FUEL_CO2_G_PER_L["diesel"]
MODEL = "onnxruntime-cpu:residual-3f2a9c"


def legacy(seq, start_s, co2_kg=0.3):
    return Summary("truck1", seq, start_s, start_s + 10, co2_kg, 0.11, 0.1, 2.0, 0.01, 100, 900)


def audited(seq, start_s, co2_kg=0.3, measured_s=0.0, measured_co2_kg=0.0, sigma=0.03, model=MODEL,
            factor="diesel 2689 g/L"):
    modelled = co2_kg * (10.0 - measured_s) / 10.0
    return dataclasses.replace(legacy(seq, start_s, co2_kg), measured_s=measured_s, measured_co2_kg=measured_co2_kg,
                               modelled_co2_kg=modelled, co2_sigma_kg=sigma, model_ids=model, emission_factor=factor)


def run_window(meter_lph):
    """10 s at 10 Hz of a diesel estimate of 10 g/s (sigma 1 g/s); the meter reads ``meter_lph(t)``."""
    w = SummaryWindow(window_s=10.0)
    fuel_lph = 10.0 * 3600.0 / DIESEL
    closed = []
    for i in range(101):
        t = T0 + i * 0.1
        closed += w.add_state(StateSample(t, 5.0, False, meter_lph(t - T0)))
        closed += w.add_estimate(EstimateSample(t, 10.0, 11.0, fuel_lph, 900, 1.0, MODEL))
    assert len(closed) == 1
    return closed[0]


def test_the_window_splits_co2_into_metered_and_modelled_seconds():
    w = run_window(lambda t: 12.0 * 3600.0 / DIESEL if t < 4.0 else math.nan)  # meter for the first 4 s only
    assert w.co2_kg == pytest.approx(0.1)  # the estimator's figure, unchanged
    assert w.measured_s == pytest.approx(4.0)
    assert w.measured_co2_kg == pytest.approx(12.0 * 4.0 / 1000.0)  # the meter's litres x the factor
    assert w.modelled_co2_kg == pytest.approx(10.0 * 6.0 / 1000.0)
    assert w.co2_sigma_kg == pytest.approx(1.0 * 6.0 / 1000.0)  # the modelled seconds only
    assert (w.model_ids, w.emission_factor) == (MODEL, factor_label(DIESEL)) and w.emission_factor.startswith("diesel ")


def test_without_a_meter_everything_is_modelled():
    w = run_window(lambda t: math.nan)
    assert (w.measured_s, w.measured_co2_kg) == (0.0, 0.0)
    assert w.modelled_co2_kg == pytest.approx(w.co2_kg) and w.co2_sigma_kg == pytest.approx(0.01)


def test_an_estimate_with_a_nan_uncertainty_is_refused():
    w = SummaryWindow()
    with pytest.raises(InputRejectedError) as info:
        w.add_estimate(EstimateSample(T0, 10.0, 11.0, 1.0, 900, math.nan, MODEL))
    assert info.value.reason == "out_of_range"


def test_csb3_round_trip_and_bytes_per_summary():
    before = [legacy(10 + i, T0 + 10 * i) for i in range(6)]
    after = [audited(10 + i, T0 + 10 * i, measured_s=10.0 * (i % 2), measured_co2_kg=0.31 * (i % 2))
             for i in range(6)]
    one_old, one_new = encode_batch(before[:1]), encode_batch(after[:1])
    six_old, six_new = encode_batch(before), encode_batch(after)
    print(f"\nbytes per summary, 1 per message: CSB1 {len(one_old)}, CSB3 {len(one_new)}; "
          f"6 per message: CSB1 {len(six_old) / 6:.1f}, CSB3 {len(six_new) / 6:.1f}")
    table_b = len(MODEL) + len("diesel 2689 g/L") + 3
    assert six_new[0] == VERSION_AUDIT and (len(six_new) - table_b) / 6 <= len(six_old) / 6 + 10
    back = decode_batch("truck1", six_new)
    for a, b in zip(after, back, strict=True):
        assert (b.model_ids, b.emission_factor) == (a.model_ids, a.emission_factor)
        for name in ("co2_kg", "measured_s", "measured_co2_kg", "modelled_co2_kg", "co2_sigma_kg"):
            resolution = {"measured_s": 0.05, "co2_sigma_kg": 0.5e-4}.get(name, 0.5e-6)
            assert getattr(b, name) == pytest.approx(getattr(a, name), abs=resolution)


def test_old_senders_and_mixed_batches_keep_working():
    old = [legacy(1, T0), legacy(2, T0 + 10)]
    assert encode_batch(old)[0] == 1 and decode_batch("truck1", encode_batch(old)) == old  # CSB1 unchanged
    gap = Summary("truck1", 3, T0 + 20, T0 + 30, 0, 0, 0, 0, 0, 0, 0, gap="queue_full", lost_first=1, lost_last=2)
    assert encode_batch([gap])[0] == 2 and decode_batch("truck1", encode_batch([gap])) == [gap]  # CSB2 unchanged
    mixed = [legacy(4, T0 + 30), gap.__class__(**{**gap.__dict__, "sequence": 5}), audited(6, T0 + 50),
             audited(7, T0 + 60, factor="")]
    back = decode_batch("truck1", encode_batch(mixed))
    assert [s.has_audit for s in back] == [False, False, True, True]
    assert back[0].measured_s is None and back[0].model_ids == "" and back[1].gap == "queue_full"
    assert back[3].emission_factor == "" and back[3].model_ids == MODEL
    assert "measured_s" not in back[0].as_dict() and back[2].as_dict()["model_ids"] == MODEL


def test_a_long_model_id_is_cut_not_refused():
    s = audited(1, T0, model="m" * 500)
    assert decode_batch("truck1", encode_batch([s]))[0].model_ids == "m" * 200


GOOD = encode_batch([audited(1, T0), audited(2, T0 + 10)])


def csb3(table: list[bytes], co2_mg: int, audit: list[int]) -> bytes:
    """One CSB3 record (all single-byte varints): window of 10 ms, ``co2_mg``, no gap, then ``audit``."""
    head = [3, 1, 1, 1, len(table)]
    for text in table:
        head += [len(text), *text]
    return bytes(head + [0, 0, 10, co2_mg, 0, 0, 0, 0, 0, 0, 0] + audit)


@pytest.mark.parametrize(("payload", "reason"), [
    (GOOD[:-1], "truncated"),
    (csb3([b"m"], 5, [1, 0, 0, 0, 0, 0]), None),  # the valid base of the cases below
    (csb3([b"m"], 5, [2, 0, 0, 0, 0, 0]), "out_of_range"),  # model reference past the table
    (csb3([b"m"], 5, [1, 2, 0, 0, 0, 0]), "out_of_range"),  # factor reference past the table
    (csb3([b"m"], 5, [1, 0, 0, 4, 5, 0]), "out_of_range"),  # 2 mg not modelled, measured 2 - 3 < 0
    (csb3([b"m"], 5, [1, 0, 0, 12, 0, 0]), "out_of_range"),  # 6 mg not modelled of 5: modelled < 0
    (csb3([b"\xff\xfe"], 5, [1, 0, 0, 0, 0, 0]), "bad_text"),  # not UTF-8
    (bytes([3, 1, 1, 1, 1, 0xC8, 0x01]) + b"x" * 10, "bad_text"),  # a 200-byte string with 10 bytes left
    (bytes([3, 1, 1, 1, 0xFF, 0x7F]), "bad_table"),
    (csb3([b"m"], 5, [1, 0, 0, 0, 0, 0, 0]), "trailing_bytes"),
])
def test_hostile_csb3_payloads_are_refused_with_a_reason(payload, reason):
    if reason is None:
        assert decode_batch("truck1", payload)[0].modelled_co2_kg == pytest.approx(5e-6)
        return
    with pytest.raises(InputRejectedError) as info:
        decode_batch("truck1", payload)
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, len(GOOD) - 1))
def test_damaged_csb3_never_escapes_as_anything_but_a_rejection(noise, cut):
    for data in (b"\x03" + noise, GOOD[:cut] + noise):
        try:
            decode_batch("truck1", data)
        except InputRejectedError:
            pass


def test_an_electric_drive_regenerating_has_no_factor_and_encodes_without_error():
    w = SummaryWindow(window_s=10.0)
    closed = []
    for i in range(101):  # net -1 g/s (regeneration credited at the grid intensity), no fuel, no meter
        t = T0 + i * 0.1
        closed += w.add_state(StateSample(t, 5.0, False))
        closed += w.add_estimate(EstimateSample(t, -1.0, 2.0, 0.0, 900, 0.1, "physics:physics"))
    (c,) = closed
    assert (c.emission_factor, c.measured_s) == ("", 0.0) and c.modelled_co2_kg == pytest.approx(-0.01)
    s = audited(1, T0, co2_kg=c.co2_kg, sigma=c.co2_sigma_kg, factor=c.emission_factor)
    s = dataclasses.replace(s, modelled_co2_kg=c.modelled_co2_kg)
    back = decode_batch("truck1", encode_batch([s]))[0]  # amounts are >= 0 on the wire, as co2_kg always was
    assert (back.co2_kg, back.modelled_co2_kg, back.emission_factor) == (0.0, 0.0, "")
