"""Parameters of the uplink_bridge node: summary window, durable queue, MQTT link."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from carbon_ai_nodes.common.params import ParamSet, param
from carbon_ai_nodes.uplink.durable_queue import FULL_POLICIES
from carbon_ai_nodes.uplink.summary_codec import ASSET_ID_RE

MQTT_PROTOCOLS = ("auto", "5", "3.1.1")


@dataclasses.dataclass(frozen=True)
class UplinkBridgeParams(ParamSet):
    """Everything the uplink bridge reads at configure; connection settings are read-only at run time."""

    SECTION: ClassVar[str] = "uplink_bridge"
    asset_id: str = param("", "Asset id in topics and summaries; empty = the node namespace (e.g. truck1)",
                          read_only=True)
    window_s: float = param(10.0, "Summary window length, aligned to multiples since the Unix epoch", unit="s",
                            gt=0.0, max=3600.0, read_only=True)
    max_hold_s: float = param(1.0, "Longest a sample's rate is held when the next one is late", unit="s",
                              gt=0.0, max=60.0, read_only=True)
    grace_s: float = param(0.5, "Extra wait for late messages before a silent window closes", unit="s",
                           min=0.0, max=60.0, read_only=True)
    max_age_s: float = param(5.0, "Inputs stamped older than this (versus the node clock) are rejected as stale",
                             unit="s", gt=0.0)
    max_future_s: float = param(1.0, "Inputs stamped further ahead than this are rejected", unit="s", gt=0.0)
    input_timeout_s: float = param(2.0, "Watchdog: an input silent this long is reported stale", unit="s", gt=0.0)
    queue_path: str = param("", "SQLite queue file; empty = $ROS_HOME/carbon_ai/uplink_<asset>.sqlite3",
                            read_only=True)
    queue_max_bytes: int = param(16_000_000, "Largest stored size of the queue (payload + 48 B per row)",
                                 unit="B", min=1024, read_only=True)
    queue_ttl_s: float = param(2_592_000.0, "Unsent summaries older than this are dropped; 0 = keep", unit="s",
                               min=0.0, read_only=True)
    queue_full_policy: str = param("drop_oldest", "What a full queue does with a new summary",
                                   choices=FULL_POLICIES, read_only=True)
    mqtt_host: str = param("localhost", "Broker host; empty = no uplink (summaries stay queued)", read_only=True)
    mqtt_port: int = param(1883, "Broker port (8883 is the usual TLS port)", min=1, max=65535, read_only=True)
    mqtt_protocol: str = param("auto", "MQTT version; auto tries 5 and falls back to 3.1.1",
                               choices=MQTT_PROTOCOLS, read_only=True)
    client_id: str = param("", "MQTT client id; empty = carbon_ai-<asset>", read_only=True)
    topic_prefix: str = param("cai/v1", "Topic prefix: summaries go to <prefix>/<asset>/s", read_only=True)
    tls_ca_file: str = param("", "CA bundle that signed the broker certificate; non-empty enables TLS",
                             read_only=True)
    tls_cert_file: str = param("", "Client certificate (PEM) for mutual TLS", read_only=True)
    tls_key_file: str = param("", "Client private key (PEM) for mutual TLS", read_only=True)
    username: str = param("", "MQTT user name (optional)", read_only=True)
    password_file: str = param("", "File holding the MQTT password (kept out of parameter dumps)", read_only=True)
    keepalive_s: int = param(60, "MQTT keep-alive interval", unit="s", min=5, max=65535, read_only=True)
    backoff_min_s: float = param(1.0, "First reconnect delay (exponential back-off with jitter)", unit="s",
                                 gt=0.0, max=600.0)
    backoff_max_s: float = param(120.0, "Longest reconnect delay", unit="s", gt=0.0, max=3600.0)
    bandwidth_limit_bytes_s: float = param(0.0, "Cap on MQTT bytes sent per second; 0 = no cap", unit="B/s",
                                           min=0.0)
    batch_max: int = param(100, "Most summaries per MQTT message (catch-up after an outage)", min=1, max=1000)
    batch_linger_s: float = param(60.0, "Hold new summaries up to this long to send several per message; 0 = "
                                  "send each at once", unit="s", min=0.0, max=3600.0)
    max_inflight: int = param(8, "MQTT messages awaiting PUBACK at once", min=1, max=1000)
    status_period_s: float = param(1.0, "Period of the queue/link check and diagnostics values", unit="s",
                                   gt=0.0, max=60.0, read_only=True)
    checkpoint_period_s: float = param(2.0, "Period of the durable checkpoint of the window in progress: the most "
                                       "a crash loses (reported upstream as a gap record)", unit="s", gt=0.0,
                                       max=600.0, read_only=True)

    def check(self) -> None:
        """Cross-field rules: asset id charset, mutual-TLS pairs, back-off order."""
        if self.asset_id and not ASSET_ID_RE.match(self.asset_id):
            self.fail("asset_id", "use 1-64 of A-Z a-z 0-9 _ . -")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            self.fail("tls_cert_file", "tls_cert_file and tls_key_file go together (mutual TLS)")
        if self.tls_cert_file and not self.tls_ca_file:
            self.fail("tls_ca_file", "a client certificate needs TLS: set tls_ca_file too")
        if self.backoff_max_s < self.backoff_min_s:
            self.fail("backoff_max_s", f"must be >= backoff_min_s ({self.backoff_min_s})")
        if any(c in self.topic_prefix for c in "#+") or not self.topic_prefix.strip("/"):
            self.fail("topic_prefix", "must be non-empty and free of MQTT wildcards")
