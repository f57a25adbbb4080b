"""The MQTT side of the uplink: drains a :class:`DurableQueue` to a broker with paho-mqtt 2.x, QoS 1.

One background thread owns everything network-side (paho is not thread-safe across loop and publish):

- connects with MQTT 5 (``auto`` falls back to 3.1.1 when the broker turns 5 down), TLS with a CA file and an
  optional client certificate/key (mutual TLS), optional user name/password, keep-alive, and a retained
  ``online`` status whose last-will twin marks the asset ``offline`` if the link dies without a goodbye;
- reconnects with exponential back-off and jitter (each delay drawn in [cap/2, cap], cap doubling from
  ``backoff_min_s`` to ``backoff_max_s``: "equal jitter", so a fleet coming back after a broker outage does not
  reconnect in lock-step, yet every vehicle still waits at least half the cap);
- sends queued summaries in batches (one CSB1 payload per MQTT message, up to ``batch_max``), holding fresh
  ones up to ``batch_linger_s`` to share one message's overhead, and sending at once when catching up;
- caps the bytes per second it writes (token bucket), and keeps at most ``max_inflight`` messages unacked;
- deletes rows from the queue only when their PUBACK arrives. A dropped connection forgets what was in flight
  and sends it again after reconnecting (at-least-once); the receiver drops duplicates by (asset, sequence).

A fresh paho client is made for each connection, so paho never replays stale in-flight packets of its own:
the queue is the only source of truth for what still has to go.

The back-off starts again from ``backoff_min_s`` only after a PUBACK: a connection that is accepted but then
fails (a broken queue, a refused publish) must not reconnect at once, again and again. A queue SQLite reports
damaged stops the thread with ``error_kind`` ``queue`` (no reconnecting at all) for its owner to repair.

TLS failures are named by cause, with the fix: a client certificate outside its validity period (checked
against the clock when a handshake fails), a plain-MQTT listener on a TLS connection (probed with one MQTT
CONNECT when the broker drops the handshake), a broker certificate not signed by ``tls_ca_file`` or issued for
another host name.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbon_ai_nodes.common.errors import ConfigError, LinkError
from carbon_ai_nodes.uplink.durable_queue import DurableQueue, QueueDamagedError
from carbon_ai_nodes.uplink.summary_codec import encode_batch, mqtt_publish_bytes, status_topic, summary_topic

if TYPE_CHECKING:  # paho is imported when the link first connects
    from paho.mqtt.client import Client

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    """Connection, batching and rate settings of one asset's uplink (see UplinkBridgeParams for meanings)."""

    host: str
    port: int
    asset_id: str
    client_id: str = ""
    topic_prefix: str = "cai/v1"
    protocol: str = "auto"  # auto | 5 | 3.1.1
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    username: str = ""
    password: str = ""
    keepalive_s: int = 60
    backoff_min_s: float = 1.0
    backoff_max_s: float = 120.0
    bandwidth_limit_bytes_s: float = 0.0
    batch_max: int = 100
    batch_linger_s: float = 60.0
    max_inflight: int = 8
    connect_timeout_s: float = 10.0


def tls_context(ca_file: str, cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client TLS context verifying the broker against ``ca_file``, presenting a client cert if given.

    Raises ConfigError naming the file that is missing or unreadable, at configure time rather than later.
    """
    for key, path in (("tls_ca_file", ca_file), ("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{key}={path!r}: no such file")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=ca_file)
        if cert_file:
            ctx.load_cert_chain(certfile=cert_file, keyfile=key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"TLS files (tls_ca_file={ca_file!r}, tls_cert_file={cert_file!r}): {exc}") from exc
    return ctx


def certificate_validity_problem(cert_file: str, now_s: float) -> str:
    """Why ``cert_file`` is not valid at ``now_s`` (Unix s), with the fix; "" if it is (or cannot be read)."""
    try:
        # the stdlib's only certificate parser; private, so typeshed does not list it
        decoded = ssl._ssl._test_decode_cert(cert_file)  # type: ignore[attr-defined]
        not_before_s = ssl.cert_time_to_seconds(decoded["notBefore"])
        not_after_s = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (ssl.SSLError, OSError, KeyError, ValueError, AttributeError):
        return ""
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now_s))
    if now_s < not_before_s:
        return (f"client certificate tls_cert_file={cert_file!r} is not valid before {decoded['notBefore']} (the "
                f"clock says {now}): set the clock (NTP) or install a certificate valid now")
    if now_s > not_after_s:
        return (f"client certificate tls_cert_file={cert_file!r} expired on {decoded['notAfter']} (the clock says "
                f"{now}): install a renewed certificate")
    return ""


def speaks_plain_mqtt(host: str, port: int, timeout_s: float = 3.0) -> bool:
    """True if ``host:port`` answers a plain (non-TLS) MQTT 3.1.1 CONNECT with a CONNACK."""
    connect = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 2]) + b"cp"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(connect)
            return sock.recv(4)[:1] == b"\x20"
    except OSError:
        return False


class Backoff:
    """Exponential back-off with equal jitter: delay n is uniform in [c/2, c], c = min(max, min * 2**n)."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        """The delay before the next attempt (s); each call counts one more failure."""
        cap = min(self.max_s, self.min_s * (2.0 ** min(self.attempt, 60)))
        self.attempt += 1
        return self._rng.uniform(cap / 2.0, cap)

    def reset(self) -> None:
        """A connection succeeded: start again from ``min_s``."""
        self.attempt = 0


class TokenBucket:
    """Bandwidth cap: ``rate`` bytes/s on average, bursts up to ``burst`` bytes; rate 0 = unlimited."""

    def __init__(self, rate_bytes_s: float, burst_bytes: float, now_s: float) -> None:
        self.rate = rate_bytes_s
        self.burst = max(burst_bytes, 1.0)
        self.tokens = self.burst
        self.t_s = now_s

    def take(self, n_bytes: int, now_s: float) -> bool:
        """Spend ``n_bytes`` if available (a message larger than the burst may go when the bucket is full)."""
        if self.rate <= 0:
            return True
        self.tokens = min(self.burst, self.tokens + (now_s - self.t_s) * self.rate)
        self.t_s = now_s
        if self.tokens >= min(n_bytes, self.burst):
            self.tokens -= n_bytes  # may go negative: a big message is paid off before the next one
            return True
        return False


@dataclasses.dataclass
class LinkStats:
    """What the link reports on /diagnostics. ``state``: disabled | connecting | connected | backoff | stopped."""

    state: str = "connecting"
    protocol: str = ""
    last_error: str = ""
    # tls_verify | tls_client_cert | tls_cert_time | tls_plain_broker | refused | unreachable | publish_refused |
    # internal | queue
    error_kind: str = ""
    bytes_sent: int = 0
    messages_sent: int = 0
    summaries_acked: int = 0
    inflight: int = 0
    connects: int = 0
    connect_failures: int = 0
    next_attempt_in_s: float = 0.0


class MqttUplink:
    """Background sender from a durable queue to an MQTT broker. ``start()``, ``wake()``, ``stats()``, ``stop()``."""

    def __init__(self, config: LinkConfig, queue_factory: Callable[[], DurableQueue],
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.config = config
        self._queue_factory = queue_factory
        self._clock = clock
        self._ssl = tls_context(config.tls_ca_file, config.tls_cert_file, config.tls_key_file) \
            if config.tls_ca_file else None
        self._topic = summary_topic(config.topic_prefix, config.asset_id)
        self._status_topic = status_topic(config.topic_prefix, config.asset_id)
        self._backoff = Backoff(config.backoff_min_s, config.backoff_max_s, rng)
        self._bucket = TokenBucket(config.bandwidth_limit_bytes_s, max(config.bandwidth_limit_bytes_s, 4096.0),
                                   clock())
        self._protocol = "5" if config.protocol in ("auto", "5") else "3.1.1"
        self._stats = LinkStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # network-thread state
        self._client: Client | None = None
        self._connected = False
        self._connack_error = ""
        self._inflight: dict[int, list[int]] = {}
        self._cursor = 0
        self._log_error = ""
        self._queue: DurableQueue | None = None
        self._next_attempt_s = 0.0
        self._next_pump_s = 0.0

    # ----------------------------------------------------------------- public, any thread
    def start(self) -> None:
        """Start the network thread (again after :meth:`stop`)."""
        self._stop.clear()
        self._set(state="connecting", error_kind="", last_error="")  # a restart (e.g. after a queue repair)
        self._thread = threading.Thread(target=self._run, name=f"mqtt-uplink-{self.config.asset_id}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New data was queued: look at the queue now instead of at the next tick."""
        self._wake.set()

    def retune(self, **changes: Any) -> None:
        """Change run-time tunables: bandwidth_limit_bytes_s, batch_linger_s, batch_max, max_inflight, backoff_*."""
        self.config = cfg = dataclasses.replace(self.config, **changes)
        self._bucket.rate = cfg.bandwidth_limit_bytes_s
        self._bucket.burst = max(cfg.bandwidth_limit_bytes_s, 4096.0)
        self._backoff.min_s, self._backoff.max_s = cfg.backoff_min_s, cfg.backoff_max_s
        self.wake()

    def stats(self) -> LinkStats:
        """A consistent copy of the link's counters and state."""
        with self._lock:
            return dataclasses.replace(self._stats)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Say goodbye (retained offline status), disconnect and join the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # ----------------------------------------------------------------- network thread
    def _set(self, **changes: object) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._stats, k, v)

    def _run(self) -> None:
        try:
            queue = self._queue = self._queue_factory()
        except Exception as exc:  # noqa: BLE001 - the thread must report, not die silently
            self._set(state="stopped", last_error=f"cannot open the queue: {exc}", error_kind="queue")
            return
        try:
            while not self._stop.is_set():
                try:
                    self._step(queue)
                except (QueueDamagedError, sqlite3.DatabaseError) as exc:
                    # reconnecting cannot help: stop and let the owner repair the queue
                    self._drop_connection(f"uplink queue failed: {exc}")
                    self._set(error_kind="queue")
                    return
                except Exception as exc:  # noqa: BLE001 - e.g. a full disk: report, back off, retry
                    self._drop_connection(f"{type(exc).__name__}: {exc}")
                    self._set(error_kind="internal")
                    self._next_attempt_s = self._clock() + self._backoff.next_delay_s()
        finally:
            self._goodbye()
            queue.close()
            self._set(state="stopped")

    def _step(self, queue: DurableQueue) -> None:
        """One turn of the network thread: connect or wait out the back-off, read the socket, send."""
        now = self._clock()
        client = self._client
        if client is None:
            if now < self._next_attempt_s:
                self._set(state="backoff", next_attempt_in_s=round(self._next_attempt_s - now, 1))
                self._wake.wait(min(self._next_attempt_s - now, 0.5))
                self._wake.clear()
                return
            try:
                client = self._connect()
            except LinkError as exc:
                self._next_attempt_s = self._clock() + self._backoff.next_delay_s()
                with self._lock:
                    self._stats.connect_failures += 1
                    self._stats.last_error = str(exc)
                    self._stats.error_kind = getattr(exc, "kind", "unreachable")
                return
            self._next_pump_s = 0.0
        rc = client.loop(timeout=0.05)
        if rc != 0 or not self._connected:
            self._drop_connection(self._log_error or f"connection lost (paho rc {int(rc)})")
            self._next_attempt_s = self._clock() + self._backoff.next_delay_s()
            return
        if self._wake.is_set() or now >= self._next_pump_s:
            self._wake.clear()
            self._next_pump_s = self._pump(client, queue, now)

    def _connect(self) -> Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self.config
        self._set(state="connecting", protocol=self._protocol, next_attempt_in_s=0.0)
        v5 = self._protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"carbon_ai-{cfg.asset_id}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,  # MQTT 5 has clean_start instead
        )
        client.connect_timeout = cfg.connect_timeout_s
        client.max_inflight_messages_set(cfg.max_inflight + 2)  # we throttle; paho must never hold messages back
        client.will_set(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_log = self._on_log
        self._connected = False
        self._connack_error = ""
        self._log_error = ""
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s,
                           clean_start=True if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY)  # 3.1.1: only the default
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
                raise _link_error("tls_verify", f"TLS: the broker certificate is not for host {cfg.host!r} "
                                  f"({exc.verify_message}): connect by a name the certificate lists") from exc
            raise _link_error("tls_verify", f"TLS: broker certificate rejected: {exc.verify_message} (its CA is "
                              f"not tls_ca_file={cfg.tls_ca_file!r}: use the CA that signed the broker's "
                              "certificate)") from exc
        except ssl.SSLError as exc:
            raise self._tls_failure(str(exc.reason or exc)) from exc
        except OSError as exc:
            if self._ssl is not None and isinstance(exc, ConnectionResetError):  # dropped in the handshake
                raise self._tls_failure(str(exc.strerror or exc)) from exc
            raise _link_error("unreachable", f"cannot reach {cfg.host}:{cfg.port}: {exc.strerror or exc}") from exc
        deadline = self._clock() + cfg.connect_timeout_s
        while not self._connected and not self._connack_error and self._clock() < deadline:
            if client.loop(timeout=0.05) != 0:
                break
        if not self._connected:
            client.disconnect()
            reason = self._connack_error or self._log_error or "connection closed before CONNACK"
            lowered = reason.lower()
            if self.config.protocol == "auto" and ("protocol" in lowered or "before connack" in lowered):
                # the broker may speak only 3.1.1 (or only 5): alternate until one is accepted
                self._protocol = "3.1.1" if v5 else "5"
            if self._ssl is not None and not self._connack_error:
                raise self._tls_failure(reason)
            raise _link_error("refused", f"broker {cfg.host}:{cfg.port} refused the connection: {reason}")
        self._client = client
        client.publish(self._status_topic, STATUS_ONLINE, qos=1, retain=True)
        with self._lock:
            self._stats.state = "connected"
            self._stats.connects += 1
            self._stats.last_error = ""
            self._stats.error_kind = ""
        return client

    def _tls_failure(self, reason: str) -> LinkError:
        """Name the cause of a failed TLS connection: certificate dates, a plain listener, or the client cert."""
        cfg = self.config
        problem = certificate_validity_problem(cfg.tls_cert_file, self._clock()) if cfg.tls_cert_file else ""
        if problem:
            return _link_error("tls_cert_time", f"TLS: {problem}")
        if speaks_plain_mqtt(cfg.host, cfg.port):
            return _link_error("tls_plain_broker", f"TLS: {cfg.host}:{cfg.port} is a plain MQTT listener, not TLS "
                               f"({reason}): use the broker's TLS port (usually 8883), or clear tls_ca_file for "
                               "an unencrypted link")
        lowered = reason.lower()
        if "alert" in lowered or "certificate" in lowered or "eof" in lowered or "reset" in lowered:
            return _link_error("tls_client_cert", f"TLS: broker {cfg.host}:{cfg.port} ended the handshake "
                               f"({reason}): it refused the client certificate: check that tls_cert_file="
                               f"{cfg.tls_cert_file!r} is signed by the broker's client CA" if cfg.tls_cert_file
                               else f"TLS: broker {cfg.host}:{cfg.port} ended the handshake ({reason}): it "
                               "probably requires a client certificate: set tls_cert_file and tls_key_file")
        return _link_error("tls_client_cert", f"TLS handshake with {cfg.host}:{cfg.port} failed: {reason} (check "
                           "tls_cert_file/tls_key_file against the broker's CA)")

    def _on_connect(self, client: object, userdata: object, flags: object, reason_code: object,
                    properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            self._connack_error = str(reason_code)
        else:
            self._connected = True

    def _on_log(self, client: object, userdata: object, level: int, buf: str) -> None:
        from paho.mqtt.client import MQTT_LOG_ERR

        if level == MQTT_LOG_ERR and not self._log_error:
            self._log_error = buf  # the first error is the cause; later ones are "not connected" echoes

    def _on_publish(self, client: object, userdata: object, mid: int, reason_code: object,
                    properties: object) -> None:
        ids = self._inflight.pop(mid, None)
        if not getattr(reason_code, "is_failure", False):
            self._backoff.reset()  # the link works end to end (accepted connections may still fail right after)
        if ids is None:
            return  # the status message, or a message of a dropped connection
        if getattr(reason_code, "is_failure", False):
            # the broker refused it (e.g. not authorised): back off instead of resending in a tight loop
            self._log_error = f"broker refused publish: {reason_code}"
            self._set(last_error=self._log_error, error_kind="publish_refused")
            self._connected = False
            return
        assert self._queue is not None  # opened before the network thread connects
        self._queue.ack(ids)  # only now may the rows leave the disk
        with self._lock:
            self._stats.summaries_acked += len(ids)
        self._wake.set()  # an in-flight slot is free: send the next batch now (catch-up speed)

    def _pump(self, client: Client, queue: DurableQueue, now: float) -> float:
        """Send what the queue holds, within the in-flight, linger and bandwidth limits; returns when to look again."""
        cfg = self.config
        next_s = now + 0.5
        while len(self._inflight) < cfg.max_inflight:
            rows = queue.pending_with_age(cfg.batch_max, self._cursor, cfg.asset_id)
            if not rows:
                break
            oldest_created_s = rows[0][1]
            if len(rows) < cfg.batch_max and now - oldest_created_s < cfg.batch_linger_s:
                next_s = min(next_s, oldest_created_s + cfg.batch_linger_s)
                break
            payload = encode_batch([summary for _, _, summary in rows])
            size = mqtt_publish_bytes(self._topic, len(payload), mqtt5=self._protocol == "5")
            if not self._bucket.take(size, now):
                next_s = min(next_s, now + 0.05)
                break
            info = client.publish(self._topic, payload, qos=1)
            if info.rc != 0:
                break
            self._inflight[info.mid] = [row_id for row_id, _, _ in rows]
            self._cursor = rows[-1][0]
            with self._lock:
                self._stats.bytes_sent += size
                self._stats.messages_sent += 1
        self._set(inflight=len(self._inflight))
        return next_s

    def _drop_connection(self, reason: str) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001 - the socket is already gone; nothing to report beyond reason
                pass
        self._client = None
        self._connected = False
        self._inflight.clear()
        self._cursor = 0  # everything unacked goes again
        with self._lock:
            self._stats.state = "backoff"
            self._stats.inflight = 0
            self._stats.last_error = reason
            self._stats.error_kind = self._stats.error_kind or "unreachable"

    def _goodbye(self) -> None:
        client = self._client
        if client is None or not self._connected:
            return
        try:
            info = client.publish(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline and client.loop(timeout=0.05) == 0:
                pass
            client.disconnect()
            client.loop(timeout=0.1)
        except Exception:  # noqa: BLE001 - best effort on the way out; the last will covers a failure
            pass
        self._client = None


def _link_error(kind: str, message: str) -> LinkError:
    err = LinkError(message)
    err.kind = kind  # type: ignore[attr-defined]
    return err
