"""The uplink payload: CarbonSummary records of one asset, batched and packed in a compact binary format.

Format ``CSB1`` (carbon summary batch, version 1); every integer is a LEB128 varint, signed ones zig-zag coded.
The asset is not in the payload: it is the topic level before the last (``<prefix>/<asset_id>/s``)::

    u8      version (= 1)
    varint  record count n (1 .. MAX_RECORDS)
    varint  sequence of the first record
    varint  window start of the first record, ms since the Unix epoch
    n x record:
        varint  sequence step from the previous record (0 for the first; >= 1 after: gaps = summaries lost)
        zigzag  window start minus the previous record's window end, ms (0 for the first)
        varint  window length, ms
        varint  co2, mg          varint  fuel, mL         varint  distance, dm
        varint  idle, ds (0.1 s) zigzag  avoided co2, mg
        varint  estimate count   varint  worst inference latency, us
        (version 2, 3) varint gap reasons (bit set, 0 = an ordinary summary); when non-zero:
        varint  first lost sequence (0 = none)   varint  last minus first lost sequence

Format ``CSB3`` (version 3) adds what an auditor asks of each window: how much CO2 came from the fuel meter and
how much from the model, which model, which emission factor, and the model's uncertainty. After the first
window start comes a string table, then each record is the version 2 record followed by its audit fields::

    varint  table size t (0 .. MAX_TABLE), then t x (varint byte length <= 200, UTF-8 text): model ids and factors
    per record, after the version 2 fields:
        varint  model reference: 0 = no audit fields follow (a gap record, or a summary of an older sender),
                else 1 + the table index of its model ids; then
        varint  1 + table index of its emission factor (0 = unknown)
        varint  measured seconds, ds            zigzag  co2 minus modelled co2, mg
        zigzag  measured co2 minus (co2 minus modelled co2), mg
        varint  co2 1-sigma of the modelled part, 0.1 g (an uncertainty needs no mg)

The two zigzag differences make the common cases one byte: no fuel meter (modelled = co2) and a meter
that agrees with the model. A batch whose summaries carry no audit fields is still written as version 1 or 2.

A **gap record** (reasons != 0) says "of sequences first..last, any you have not received is lost" and why
(:data:`GAP_REASONS`); its window is the time span whose data is missing, its totals are zero. It has a sequence
number of its own, so it is stored, sent, acknowledged and deduplicated like any summary. A batch without gap
records is written as version 1, so ordinary traffic stays byte for byte what it was.

Quantising to mg / mL / dm / 0.1 s keeps a 10 s window at about 16 bytes, a third of a fixed float layout and
a tenth of JSON (bench/bench_uplink.py measures both); rounding is to nearest, so totals over many windows
carry no bias. Decoding is defensive: any malformed payload raises :class:`InputRejectedError`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from carbon_ai_nodes.common.errors import InputRejectedError

VERSION = 1
VERSION_GAPS = 2
VERSION_AUDIT = 3
VERSIONS = (VERSION, VERSION_GAPS, VERSION_AUDIT)
MAX_RECORDS = 1000
MAX_TABLE = 2 * MAX_RECORDS  # distinct model-id / emission-factor strings in one batch: two per record at most
MAX_TEXT_BYTES = 200  # longer ones are cut (at a character boundary)
_MAX_VARINT_BYTES = 10
ASSET_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
# Why rows are missing, as bits of a gap record (several may combine when gaps merge).
GAP_REASONS = {"queue_corrupted": 1, "queue_full": 2, "expired": 4, "bridge_crash": 8}


@dataclasses.dataclass(frozen=True)
class Summary:
    """One windowed summary of one asset, as stored, sent and received (the CarbonSummary fields)."""

    asset_id: str
    sequence: int
    window_start_s: float  # Unix time, s
    window_end_s: float
    co2_kg: float
    fuel_l: float
    distance_km: float
    idle_s: float
    avoided_co2_kg: float  # physics baseline minus estimate over the window; negative when worse
    estimate_count: int
    worst_latency_us: int
    gap: str = ""  # non-empty: a gap record; reasons from GAP_REASONS joined with "+"
    lost_first: int = 0  # a gap record's lost sequences, first..last (0 = none, e.g. a crash's time span)
    lost_last: int = 0
    # Audit fields (CSB3); None / "" = unknown (a summary of an older sender, or a gap record).
    measured_s: float | None = None  # seconds of the window with a fuel meter reading (VehicleState.fuel_rate_lph)
    measured_co2_kg: float | None = None  # CO2 of those seconds from the meter: metered litres x emission factor
    modelled_co2_kg: float | None = None  # the estimate's CO2 over the seconds without a meter reading
    co2_sigma_kg: float | None = None  # the estimator's 1-sigma (uncertainty_g_s) summed over the modelled seconds
    model_ids: str = ""  # "<backend>:<model_id>" of the window's estimates, several joined with "+"
    emission_factor: str = ""  # e.g. "diesel 2689 g/L" (several joined with "+"; "" = unknown)

    @property
    def has_audit(self) -> bool:
        """Whether the measured/modelled split and uncertainty are known (a CSB3 sender's summary)."""
        return self.measured_s is not None

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict (for JSON lines); an ordinary summary leaves out the gap fields, an unknown audit its own."""
        d = dataclasses.asdict(self)
        if not self.gap:
            del d["gap"], d["lost_first"], d["lost_last"]
        if not self.has_audit:
            for name in _AUDIT_FIELDS:
                del d[name]
        return d


_AUDIT_FIELDS = ("measured_s", "measured_co2_kg", "modelled_co2_kg", "co2_sigma_kg", "model_ids", "emission_factor")


def gap_mask(gap: str) -> int:
    """The reason bits of a ``gap`` string (``"queue_full+expired"`` -> 6); ValueError for an unknown name."""
    mask = 0
    for name in filter(None, gap.split("+")):
        if name not in GAP_REASONS:
            raise ValueError(f"gap reason {name!r}: must be one of {', '.join(GAP_REASONS)}")
        mask |= GAP_REASONS[name]
    return mask


def gap_names(mask: int) -> str:
    """The ``gap`` string of reason bits (unknown bits are named ``bit<n>``)."""
    names = [name for name, bit in GAP_REASONS.items() if mask & bit]
    names += [f"bit{n}" for n in range(32) if mask >> n & 1 and 1 << n not in GAP_REASONS.values()]
    return "+".join(names)


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def _q(value: float, scale: float, what: str) -> int:
    if not math.isfinite(value):
        raise ValueError(f"{what}={value}: must be finite")
    return int(round(value * scale))


def encode_batch(summaries: list[Summary]) -> bytes:
    """Pack consecutive summaries of ONE asset (strictly increasing sequence) into a CSB1 payload."""
    if not 1 <= len(summaries) <= MAX_RECORDS:
        raise ValueError(f"a batch holds 1..{MAX_RECORDS} summaries, got {len(summaries)}")
    first = summaries[0]
    with_audit = any(s.has_audit for s in summaries)
    with_gaps = with_audit or any(s.gap for s in summaries)
    out = bytearray([VERSION_AUDIT if with_audit else VERSION_GAPS if with_gaps else VERSION])
    _put_varint(out, len(summaries))
    _put_varint(out, first.sequence)
    _put_varint(out, _q(first.window_start_s, 1000.0, "window_start_s"))
    table: dict[str, int] = {}
    if with_audit:
        for s in filter(lambda s: s.has_audit, summaries):
            table.setdefault(s.model_ids, len(table))
            if s.emission_factor:  # an unknown factor is reference 0, not a table entry
                table.setdefault(s.emission_factor, len(table))
        _put_varint(out, len(table))
        for text in table:
            raw = text.encode()[:MAX_TEXT_BYTES].decode(errors="ignore").encode()
            _put_varint(out, len(raw))
            out += raw
    prev_seq = first.sequence
    prev_end_ms = _q(first.window_start_s, 1000.0, "window_start_s")
    for s in summaries:
        if s.asset_id != first.asset_id:
            raise ValueError("a batch holds one asset")
        start_ms = _q(s.window_start_s, 1000.0, "window_start_s")
        end_ms = _q(s.window_end_s, 1000.0, "window_end_s")
        step = s.sequence - prev_seq
        if s is not first and step < 1:
            raise ValueError(f"sequence must increase within a batch: {prev_seq} then {s.sequence}")
        _put_varint(out, step)
        _put_varint(out, _zigzag(start_ms - prev_end_ms))
        _put_varint(out, end_ms - start_ms)
        _put_varint(out, max(0, _q(s.co2_kg, 1e6, "co2_kg")))
        _put_varint(out, max(0, _q(s.fuel_l, 1e3, "fuel_l")))
        _put_varint(out, max(0, _q(s.distance_km, 1e4, "distance_km")))
        _put_varint(out, max(0, _q(s.idle_s, 10.0, "idle_s")))
        _put_varint(out, _zigzag(_q(s.avoided_co2_kg, 1e6, "avoided_co2_kg")))
        _put_varint(out, s.estimate_count)
        _put_varint(out, s.worst_latency_us)
        if with_gaps:
            mask = gap_mask(s.gap)
            _put_varint(out, mask)
            if mask:
                _put_varint(out, s.lost_first)
                _put_varint(out, s.lost_last - s.lost_first if s.lost_first else 0)
        if with_audit:
            _put_audit(out, s, table)
        prev_seq, prev_end_ms = s.sequence, end_ms
    return bytes(out)


def _put_audit(out: bytearray, s: Summary, table: dict[str, int]) -> None:
    if not s.has_audit:
        _put_varint(out, 0)
        return
    _put_varint(out, 1 + table[s.model_ids])
    _put_varint(out, 1 + table[s.emission_factor] if s.emission_factor else 0)
    co2_mg = max(0, _q(s.co2_kg, 1e6, "co2_kg"))
    modelled_mg = max(0, _q(s.modelled_co2_kg or 0.0, 1e6, "modelled_co2_kg"))
    _put_varint(out, max(0, _q(s.measured_s or 0.0, 10.0, "measured_s")))
    _put_varint(out, _zigzag(co2_mg - modelled_mg))
    _put_varint(out, _zigzag(max(0, _q(s.measured_co2_kg or 0.0, 1e6, "measured_co2_kg")) - (co2_mg - modelled_mg)))
    _put_varint(out, max(0, _q(s.co2_sigma_kg or 0.0, 1e4, "co2_sigma_kg")))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        value = shift = 0
        for _ in range(_MAX_VARINT_BYTES):
            if self.pos >= len(self.data):
                raise InputRejectedError("truncated", f"payload ends at byte {self.pos}")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise InputRejectedError("bad_varint", f"varint longer than {_MAX_VARINT_BYTES} bytes at {self.pos}")

    def text(self) -> str:
        n = self.varint()
        if n > MAX_TEXT_BYTES or self.pos + n > len(self.data):
            raise InputRejectedError("bad_text", f"string of {n} bytes at {self.pos}")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise InputRejectedError("bad_text", f"not UTF-8 at {self.pos - n}") from exc

    def audit(self, table: list[str], co2_mg: int, record: int) -> dict[str, Any]:
        """One record's CSB3 audit fields, as Summary keyword arguments (empty: none were sent)."""
        model_ref = self.varint()
        if not model_ref:
            return {}
        factor_ref = self.varint()
        measured_ds, not_modelled_mg = self.varint(), _unzigzag(self.varint())
        measured_mg = not_modelled_mg + _unzigzag(self.varint())
        sigma_dg = self.varint()
        modelled_mg = co2_mg - not_modelled_mg
        if model_ref > len(table) or factor_ref > len(table) or modelled_mg < 0 or measured_mg < 0:
            raise InputRejectedError("out_of_range", f"record {record}: audit fields")
        return {"measured_s": measured_ds / 10.0, "measured_co2_kg": measured_mg / 1e6,
                "modelled_co2_kg": modelled_mg / 1e6, "co2_sigma_kg": sigma_dg / 1e4,
                "model_ids": table[model_ref - 1], "emission_factor": table[factor_ref - 1] if factor_ref else ""}


def decode_batch(asset_id: str, payload: bytes) -> list[Summary]:
    """Unpack a CSB1, CSB2 or CSB3 payload; raises InputRejectedError (reason ``empty``, ``version``,
    ``truncated``, ...)."""
    if not ASSET_ID_RE.match(asset_id):
        raise InputRejectedError("bad_asset", f"asset id {asset_id[:80]!r}")
    if not payload:
        raise InputRejectedError("empty")
    version = payload[0]
    if version not in VERSIONS:
        raise InputRejectedError("version", f"payload version {version}, expected one of {VERSIONS}")
    r = _Reader(payload)
    r.pos = 1
    count = r.varint()
    if not 1 <= count <= MAX_RECORDS:
        raise InputRejectedError("bad_count", f"{count} records")
    seq = r.varint()
    end_ms = r.varint()
    table = []
    if version == VERSION_AUDIT:
        size = r.varint()
        if size > MAX_TABLE:
            raise InputRejectedError("bad_table", f"{size} strings")
        table = [r.text() for _ in range(size)]
    out = []
    for i in range(count):
        step = r.varint()
        if i and step < 1:
            raise InputRejectedError("bad_sequence", "sequence must increase within a batch")
        seq += step
        start_ms = end_ms + _unzigzag(r.varint())
        end_ms = start_ms + r.varint()
        co2_mg, fuel_ml, dist_dm, idle_ds = r.varint(), r.varint(), r.varint(), r.varint()
        avoided_mg = _unzigzag(r.varint())
        count_estimates, latency_us = r.varint(), r.varint()
        mask = r.varint() if version != VERSION else 0
        lost_first = r.varint() if mask else 0
        lost_last = lost_first + r.varint() if mask else 0
        audit = r.audit(table, co2_mg, i) if version == VERSION_AUDIT else {}
        if seq >= 1 << 64 or start_ms < 0 or count_estimates >= 1 << 32 or latency_us >= 1 << 32 \
                or lost_last >= 1 << 64 or mask >= 1 << 32:
            raise InputRejectedError("out_of_range", f"record {i}")
        out.append(Summary(
            asset_id=asset_id, sequence=seq, window_start_s=start_ms / 1000.0, window_end_s=end_ms / 1000.0,
            co2_kg=co2_mg / 1e6, fuel_l=fuel_ml / 1e3, distance_km=dist_dm / 1e4, idle_s=idle_ds / 10.0,
            avoided_co2_kg=avoided_mg / 1e6, estimate_count=count_estimates, worst_latency_us=latency_us,
            gap=gap_names(mask), lost_first=lost_first, lost_last=lost_last, **audit,
        ))
    if r.pos != len(payload):
        raise InputRejectedError("trailing_bytes", f"{len(payload) - r.pos} bytes after the last record")
    return out


def summary_topic(prefix: str, asset_id: str) -> str:
    """MQTT topic of an asset's summaries: ``<prefix>/<asset_id>/s`` (short: it is sent with every batch)."""
    return f"{prefix.rstrip('/')}/{asset_id}/s"


def status_topic(prefix: str, asset_id: str) -> str:
    """MQTT topic of an asset's retained online/offline status (the last will sets offline)."""
    return f"{prefix.rstrip('/')}/{asset_id}/status"


def asset_from_topic(topic: str) -> str:
    """The asset id of a summary topic; raises InputRejectedError for any other shape."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[-1] != "s":
        raise InputRejectedError("bad_topic", topic[:120])
    return parts[-2]


def mqtt_publish_bytes(topic: str, payload_len: int, *, mqtt5: bool = True, qos: int = 1) -> int:
    """Bytes on the wire (MQTT level, before TCP/TLS) of one PUBLISH plus its PUBACK (MQTT 3.1.1/5 spec)."""
    variable = 2 + len(topic.encode()) + (2 if qos else 0) + (1 if mqtt5 else 0)  # + empty property length
    remaining = variable + payload_len
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    puback = 4 if qos == 1 else 0  # fixed header 2 + packet id 2 (reason code omitted when success)
    return 1 + length_bytes + remaining + puback
