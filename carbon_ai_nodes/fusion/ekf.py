"""Vehicle-state fusion: an extended Kalman filter over GNSS, IMU and wheel speed, plus engine carry-through.

The state layout is in :mod:`carbon_ai_nodes.fusion.state`, the inputs and how each observes the state in
:mod:`carbon_ai_nodes.fusion.measurements`; this module predicts, updates, gates and keeps the books.

Motion model: the vehicle moves along its heading at ``speed`` on a slope ``grade`` (rise/run), so
``d(east, north)/dt = speed * cos(atan(grade)) * (cos, sin)(heading)`` and ``d(up)/dt = speed * sin(atan(grade))``.
Acceleration and yaw rate are first-order Gauss-Markov processes (they decay to zero with time constants
``accel_tau_s`` / ``yaw_rate_tau_s``), so prediction-only operation stays bounded and the covariance grows
the way it should. Grade is a random walk per metre travelled (roads change slope with distance, not time).

Robustness: every measurement is validated (finite, plausible, covariance positive semi-definite; stamp not in
the future, not older than ``max_stamp_age_s`` and later than the same source's last one, so a frozen or
crawling sensor clock is refused while its messages still arrive), gated by its Mahalanobis distance, and
checked for physically impossible GNSS jumps. A measurement up to ``max_lateness_s`` older than the filter is
folded in by stamp: the filter rewinds to the snapshot before it and replays the newer ones; older ones are
dropped. A rejected measurement leaves the state exactly as it was. Rejections raise
:class:`InputRejectedError` with a stable ``reason`` key.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import numpy as np

from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.frames import wrap_angle
from carbon_ai_nodes.common.geodesy import LocalFrame
from carbon_ai_nodes.fusion.fusion_params import FusionParams
from carbon_ai_nodes.fusion.measurements import (
    ENGINE_CHANNELS,
    EngineSample,
    GnssFix,
    ImuSample,
    Measurement,
    PositionFix,
    Quantity,
    ScalarMeasurements,
    UpdateRow,
    WheelSpeed,
    engine_values,
    gnss_covariance,
    imu_observations,
    observation_row,
    odom_observations,
    position_rows,
)
from carbon_ai_nodes.fusion.state import OUTPUT_INDEX, PSI, STATE_SIZE, A, E, FusedState, G, N, R, U, V

_OUTPUT_IX = np.ix_(OUTPUT_INDEX, OUTPUT_INDEX)
_IDENTITY = np.eye(STATE_SIZE)


class _Snapshot(NamedTuple):
    x: np.ndarray
    p: np.ndarray
    t: float | None  # None before the first measurement
    heading_ok: bool
    position_ok: bool
    anchor: tuple[float, float] | None
    last_fix: tuple[float, float, float] | None
    gnss_streak: int


class _Entry(NamedTuple):
    t: float
    meas: Measurement
    before: _Snapshot


class FusionFilter:
    """The EKF and its bookkeeping. Feed it with ``update_*``; read it with :meth:`state_at`.

    ``now_s`` arguments are the caller's clock (used only to refuse stamps from the future). All methods
    either succeed or raise :class:`InputRejectedError` leaving the state untouched.
    """

    def __init__(self, params: FusionParams) -> None:
        self.params = params
        self.frame: LocalFrame | None = params.datum
        self.replays = 0
        self.gnss_resets = 0
        self._engine: dict[str, float] = {c: math.nan for c in ENGINE_CHANNELS}
        self._engine_t: dict[str, float] = {c: -math.inf for c in ENGINE_CHANNELS}
        self._last_stamp: dict[str, float] = {}  # per source: the sensor's clock only moves forwards
        self.reset()

    # --------------------------------------------------------------------------------------------- setup
    def reset(self) -> None:
        """Forget the motion estimate (keeps the datum, the engine carry and the parameters)."""
        self.x = np.zeros(STATE_SIZE)
        # Broad prior: position is set directly by the first fix; the rest is learnt within a few samples.
        self.P = np.diag([1e4, 1e4, 1e4, 100.0, 4.0, math.pi**2, 0.25, 0.01])
        self.t: float | None = None
        self.heading_ok = False
        self.position_ok = False
        self._anchor: tuple[float, float] | None = None
        self._last_fix: tuple[float, float, float] | None = None  # t, east, north of the last accepted fix
        self._gnss_streak = 0
        self._history: deque[_Entry] = deque()

    def set_params(self, params: FusionParams) -> None:
        """Take new (validated) parameters; a changed datum re-bases the position estimate."""
        old = self.params
        self.params = params
        if (params.datum_latitude, params.datum_longitude, params.datum_altitude_m) != (
            old.datum_latitude, old.datum_longitude, old.datum_altitude_m
        ) and params.datum is not None:
            self.frame = params.datum
            self.reset()

    @property
    def initialized(self) -> bool:
        """True once any motion measurement has been accepted."""
        return self.t is not None

    # --------------------------------------------------------------------------------------------- public updates
    def update_gnss(self, fix: GnssFix, now_s: float) -> None:
        """Fuse a GNSS fix (sets the datum on the first valid fix when none is configured)."""
        cov = gnss_covariance(fix, self.params)
        self._check_stamp("gnss", fix.stamp_s, now_s)
        if self.frame is None:
            self.frame = LocalFrame(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
        z = np.array(self.frame.to_enu(fix.latitude_deg, fix.longitude_deg, fix.altitude_m))
        self._ingest(fix.stamp_s, PositionFix(z, cov))
        self._accepted("gnss", fix.stamp_s)

    def update_imu(self, imu: ImuSample, now_s: float) -> None:
        """Fuse an IMU sample (pitch -> grade, gyro z -> yaw rate, accel x -> accel + gravity on grade)."""
        meas = imu_observations(imu, self.params)
        self._check_stamp("imu", imu.stamp_s, now_s)
        self._ingest(imu.stamp_s, meas)
        self._accepted("imu", imu.stamp_s)

    def update_odom(self, odom: WheelSpeed, now_s: float) -> None:
        """Fuse wheel-odometry speed (and yaw rate when ``odom_use_yaw_rate``)."""
        meas = odom_observations(odom, self.params)
        self._check_stamp("odom", odom.stamp_s, now_s)
        self._ingest(odom.stamp_s, meas)
        self._accepted("odom", odom.stamp_s)

    def update_engine(self, sample: EngineSample, now_s: float) -> list[str]:
        """Low-pass the engine quantities. Returns channels refused as out of range (the others are taken).

        Raises when the stamp is bad, repeated or out of order, or when no channel carries a usable value.
        """
        good, bad = engine_values(sample)
        self._check_stamp("engine", sample.stamp_s, now_s)
        tau = self.params.engine_filter_tau_s
        for channel, value in good.items():
            prev, prev_t = self._engine[channel], self._engine_t[channel]
            dt = sample.stamp_s - prev_t
            if math.isnan(prev) or tau <= 0.0 or dt > self.params.engine_timeout_s:
                self._engine[channel] = value
            else:
                alpha = 1.0 - math.exp(-max(dt, 0.0) / tau)
                self._engine[channel] = prev + alpha * (value - prev)
            self._engine_t[channel] = sample.stamp_s
        self._accepted("engine", sample.stamp_s)
        return bad

    # --------------------------------------------------------------------------------------------- output
    def engine_at(self, t_s: float) -> dict[str, float]:
        """Filtered engine quantities at ``t_s``; NaN for channels never seen or older than the timeout."""
        limit = self.params.engine_timeout_s
        return {c: (v if t_s - self._engine_t[c] <= limit else math.nan) for c, v in self._engine.items()}

    def state_at(self, t_s: float) -> FusedState:
        """The estimate predicted to ``t_s`` (never earlier than the filter time); the filter is not changed."""
        if self.t is None:
            x, p_mat, t = self.x, self.P, t_s
        else:
            t = max(t_s, self.t)
            x, p_mat = self._predict(self.x, self.P, t - self.t)
        lat = lon = alt = math.nan
        if self.frame is not None and self.position_ok:
            lat, lon, alt = self.frame.to_geodetic(float(x[E]), float(x[N]), float(x[U]))
        engine = self.engine_at(t_s)
        rpm = engine["engine_speed_rpm"]
        is_idle = bool(math.isfinite(rpm) and rpm > self.params.idle_rpm_min
                       and abs(x[V]) < self.params.idle_speed_mps)
        return FusedState(
            stamp_s=t, east_m=float(x[E]), north_m=float(x[N]), up_m=float(x[U]), speed_mps=float(x[V]),
            accel_mps2=float(x[A]), heading_rad=wrap_angle(float(x[PSI])), yaw_rate_rps=float(x[R]),
            grade=float(x[G]), latitude_deg=lat, longitude_deg=lon, altitude_m=alt,
            covariance=p_mat[_OUTPUT_IX], state_covariance=p_mat, engine=engine, is_idle=is_idle,
            heading_valid=self.heading_ok, position_valid=self.position_ok,
        )

    # --------------------------------------------------------------------------------------------- internals
    def _check_stamp(self, source: str, stamp_s: float, now_s: float) -> None:
        """The stamp rules (see the module docstring), checked after the content so a bad message is counted
        under what is wrong with it; the source's last stamp is that of its last accepted message."""
        p = self.params
        if not math.isfinite(stamp_s):
            raise InputRejectedError("nan", "stamp not finite")
        if stamp_s > now_s + p.future_tolerance_s:
            raise InputRejectedError("future_stamp", f"{stamp_s - now_s:.3f} s ahead of the clock")
        if p.max_stamp_age_s > 0 and now_s - stamp_s > p.max_stamp_age_s:
            raise InputRejectedError("stale", f"stamp {now_s - stamp_s:.3f} s old > max_stamp_age_s")
        last = self._last_stamp.get(source)
        if last is not None and stamp_s <= last:
            if stamp_s == last:
                raise InputRejectedError("repeated_stamp", f"{source} stamp {stamp_s:.9f} s again: frozen clock?")
            raise InputRejectedError("out_of_order", f"{source} stamp {last - stamp_s:.3f} s before its last one")

    def _accepted(self, source: str, stamp_s: float) -> None:
        self._last_stamp[source] = stamp_s

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(self.x, self.P, self.t, self.heading_ok, self.position_ok, self._anchor,
                         self._last_fix, self._gnss_streak)

    def _restore(self, s: _Snapshot) -> None:
        (self.x, self.P, self.t, self.heading_ok, self.position_ok, self._anchor, self._last_fix,
         self._gnss_streak) = s

    def _ingest(self, t: float, meas: Measurement) -> None:
        """Apply in stamp order: in-order directly, slightly late by rewind-and-replay, too late never."""
        if self.t is None or t >= self.t:
            before = self._snapshot()
            self._apply(t, meas)  # raises with the state untouched
            self._history.append(_Entry(t, meas, before))
            self._prune()
            return
        if t < self.t - self.params.max_lateness_s:
            raise InputRejectedError("out_of_order", f"{self.t - t:.3f} s older than the filter")
        entries = list(self._history)
        first = next((i for i, e in enumerate(entries) if e.t > t), None)
        oldest_t = None if first is None else entries[first].before.t
        if first is None or oldest_t is not None and oldest_t > t:
            raise InputRejectedError("out_of_order", "older than the replay history")
        self.replays += 1
        self._restore(entries[first].before)
        replay = [(t, meas)] + [(e.t, e.meas) for e in entries[first:]]
        self._history = deque(entries[:first])
        error: InputRejectedError | None = None
        for i, (e_t, e_meas) in enumerate(replay):
            before = self._snapshot()
            try:
                self._apply(e_t, e_meas)
            except InputRejectedError as exc:
                if i == 0:
                    error = exc  # only the new message's verdict is reported; replayed ones were counted
                continue
            self._history.append(_Entry(e_t, e_meas, before))
        self._prune()
        if error is not None:
            raise error

    def _prune(self) -> None:
        horizon = self.t - self.params.max_lateness_s if self.t is not None else -math.inf
        while len(self._history) > 1 and self._history[1].t < horizon:
            self._history.popleft()
        while len(self._history) > 4096:  # hard bound whatever the rates
            self._history.popleft()

    def _apply(self, t: float, meas: Measurement) -> None:
        if isinstance(meas, PositionFix):
            self._apply_gnss(t, meas)
        else:
            self._apply_scalars(t, meas)

    def _predicted(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        if self.t is None:
            return self.x, self.P
        return self._predict(self.x, self.P, t - self.t)

    def _predict(self, x: np.ndarray, p_mat: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Motion model over ``dt`` seconds: new (x, P); the inputs are not modified."""
        if dt <= 0.0:
            return x, p_mat
        prm = self.params
        v, a, psi, r, g = float(x[V]), float(x[A]), float(x[PSI]), float(x[R]), float(x[G])
        c, s = math.cos(psi), math.sin(psi)
        k = 1.0 / math.sqrt(1.0 + g * g)
        ea = math.exp(-dt / prm.accel_tau_s)
        er = math.exp(-dt / prm.yaw_rate_tau_s)
        xn = x.copy()
        f = _IDENTITY.copy()
        q = np.zeros(STATE_SIZE)
        distance = abs(v) * dt
        pos_var = prm.position_noise_mps**2 * dt
        if self.heading_ok:
            vh = v * k
            xn[E] += vh * c * dt
            xn[N] += vh * s * dt
            f[E, V], f[E, PSI], f[E, G] = k * c * dt, -vh * s * dt, -v * c * dt * g * k**3
            f[N, V], f[N, PSI], f[N, G] = k * s * dt, vh * c * dt, -v * s * dt * g * k**3
            q[E] = q[N] = pos_var
        else:
            # Heading unknown: the vehicle may have gone anywhere within |v| dt, so spread position instead
            # of linearising around a meaningless heading.
            q[E] = q[N] = pos_var + distance**2
        xn[U] += v * g * k * dt
        f[U, V], f[U, G] = g * k * dt, v * k**3 * dt
        xn[V] += a * dt
        f[V, A] = dt
        xn[A] = a * ea
        f[A, A] = ea
        xn[PSI] = wrap_angle(psi + r * dt)
        f[PSI, R] = dt
        xn[R] = r * er
        f[R, R] = er
        q[U] = pos_var
        q[V] = prm.speed_noise_mps2**2 * dt
        q[A] = prm.accel_sigma_mps2**2 * (1.0 - ea * ea)
        q[PSI] = 1e-6 * dt
        q[R] = prm.yaw_rate_sigma_rps**2 * (1.0 - er * er)
        q[G] = prm.grade_noise_per_sqrt_m**2 * (distance + 0.01 * dt)
        pn = np.dot(np.dot(f, p_mat), f.T)
        pn += pn.T  # F P F^T is symmetric in exact arithmetic; keep it so in floating point
        pn *= 0.5
        pn.flat[:: STATE_SIZE + 1] += q
        return xn, pn

    @staticmethod
    def _update(x: np.ndarray, p_mat: np.ndarray, rows: list[UpdateRow], gate: float) -> tuple[np.ndarray, np.ndarray]:
        """EKF update from independent scalar rows ``(state index, h or None, innovation, variance)``.

        A row with ``h`` None observes the state at ``index`` directly. Rows are applied one after another
        (Joseph-free scalar form, no matrix inverse): for independent noise this equals the joint update, and
        the sum of the rows' normalised squared innovations equals the joint Mahalanobis distance squared, so
        the gate is exact. Raises ``gated`` when that distance exceeds ``gate``; inputs are never modified.
        """
        x0 = x
        d2 = 0.0
        for j, hv, y, var in rows:
            # Innovations were taken at the prior: account for what the earlier rows moved.
            if hv is None:
                ph = p_mat[:, j]
                if x is not x0:
                    y -= float(x[j] - x0[j])
                s = float(ph[j]) + var
            else:
                ph = p_mat.dot(hv)
                if x is not x0:
                    y -= float(hv.dot(x - x0))
                s = float(hv.dot(ph)) + var
            if not s > 0.0:
                raise InputRejectedError("singular", "innovation variance not positive")
            d2 += y * y / s
            x = x + ph * (y / s)
            c = ph * (1.0 / math.sqrt(s))
            p_mat = p_mat - np.multiply.outer(c, c)  # c c^T is exactly symmetric, so P stays symmetric
        if not d2 <= gate * gate:  # also catches NaN
            raise InputRejectedError("gated", f"Mahalanobis distance {math.sqrt(d2) if d2 >= 0 else d2:.1f}")
        if not (all(map(math.isfinite, x.tolist())) and min(p_mat.diagonal().tolist()) > 0.0):
            raise InputRejectedError("numerical", "update produced a non-finite or negative covariance")
        return x, p_mat

    def _commit(self, t: float, x: np.ndarray, p_mat: np.ndarray) -> None:
        x[PSI] = wrap_angle(float(x[PSI]))
        limit = self.params.max_grade
        x[G] = min(limit, max(-limit, float(x[G])))
        self.x, self.P, self.t = x, p_mat, t

    def _apply_scalars(self, t: float, meas: ScalarMeasurements) -> None:
        x, p_mat = self._predicted(t)
        heading_init = False
        if not self.heading_ok:
            # A yaw observation gives the first heading; the update then sees a zero yaw innovation.
            yaw = next((o.value for o in meas.observations if o.quantity is Quantity.YAW), None)
            if yaw is not None:
                heading_init = True
                x, p_mat = self._init_heading(x, p_mat, yaw, self.params.imu_yaw_sigma_rad**2)
        rows = [observation_row(o, x) for o in meas.observations]
        gate = self.params.imu_gate if meas.source == "imu" else self.params.odom_gate
        xn, pn = self._update(x, p_mat, rows, gate)
        if heading_init:
            self.heading_ok = True
        self._commit(t, xn, pn)

    @staticmethod
    def _init_heading(x: np.ndarray, p_mat: np.ndarray, heading: float, var: float) -> tuple[np.ndarray, np.ndarray]:
        x = x.copy()
        p_mat = p_mat.copy()
        x[PSI] = heading
        p_mat[PSI, :] = 0.0
        p_mat[:, PSI] = 0.0
        p_mat[PSI, PSI] = var
        return x, p_mat

    def _apply_gnss(self, t: float, fix: PositionFix) -> None:
        prm = self.params
        z, cov = fix.enu_m, fix.cov_m2
        if not self.position_ok:
            x, p_mat = self._predicted(t)
            x = x.copy()
            p_mat = p_mat.copy()
            x[[E, N, U]] = z
            p_mat[[E, N, U], :] = 0.0
            p_mat[:, [E, N, U]] = 0.0
            p_mat[E:U + 1, E:U + 1] = cov
            self.position_ok = True
            self._anchor = (float(z[0]), float(z[1]))
            self._last_fix = (t, float(z[0]), float(z[1]))
            self._gnss_streak = 0
            self._commit(t, x, p_mat)
            return
        if self._last_fix is not None:
            # A jump no vehicle can make (e.g. 200 m in 10 ms) is refused whatever the covariance says.
            lt, le, ln = self._last_fix
            jump_m = math.hypot(z[0] - le, z[1] - ln)
            allowed_m = prm.max_speed_mps * max(t - lt, 0.0) + 6.0 * math.sqrt(cov[0][0] + cov[1][1]) + 5.0
            if jump_m > allowed_m:
                if self._gnss_refused(t, fix):
                    return
                raise InputRejectedError("impossible_jump", f"{jump_m:.0f} m in {t - lt:.3f} s")
        x, p_mat = self._predicted(t)
        try:
            xn, pn = self._update(x, p_mat, position_rows(fix, x), prm.gnss_gate)
        except InputRejectedError:
            if self._gnss_refused(t, fix):
                return
            raise
        if not self.heading_ok and self._anchor is not None:
            de, dn = float(z[0]) - self._anchor[0], float(z[1]) - self._anchor[1]
            dist = math.hypot(de, dn)
            if dist >= prm.heading_init_distance_m and abs(xn[V]) > 0.5:
                heading = math.atan2(dn, de) if xn[V] > 0 else math.atan2(-dn, -de)
                sigma = 2.0 * math.sqrt(cov[0][0] + cov[1][1]) / dist
                xn, pn = self._init_heading(xn, pn, heading, max(sigma, 0.05) ** 2)
                self.heading_ok = True
            elif abs(xn[V]) <= 0.5:
                self._anchor = (float(z[0]), float(z[1]))  # standing still: track from here
        self._last_fix = (t, float(z[0]), float(z[1]))
        self._gnss_streak = 0
        self._commit(t, xn, pn)

    def _gnss_refused(self, t: float, fix: PositionFix) -> bool:
        """Count a refused fix. After ``gnss_reset_after`` in a row the filter, not GNSS, is the likelier
        culprit: re-initialise position from this fix (counted in ``gnss_resets``) and return True."""
        self._gnss_streak += 1
        limit = self.params.gnss_reset_after
        if limit and self._gnss_streak >= limit:
            self.gnss_resets += 1
            self.position_ok = False
            self._apply_gnss(t, fix)
            return True
        return False
