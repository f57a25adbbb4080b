"""carbon_inference: VehicleState in, CarbonEstimate out (one per state), physics + learned residual.

Subscribes ``vehicle_state`` (reliable), publishes ``carbon_estimate`` (reliable); service ``swap_model``
(carbon_ai_msgs/SwapModel) and the ``model_path`` parameter replace the model at run time: the new one is
loaded and verified first, a bad one is refused and the old one keeps serving. In fleet mode (``assets``)
it serves ``<asset>/vehicle_state`` -> ``<asset>/carbon_estimate`` for each asset, and with
``batch_period_s > 0`` runs the states gathered in that window as one batch.

Each combustion road vehicle also learns its own model (carbon/vehicle_calibration.py) from every accepted
state and publishes ``calibrated_estimate`` (CalibratedEstimate) beside ``carbon_estimate``; with
``calibration_file`` set the calibration is reloaded at start (a bad file: a warning, a fresh start) and saved
every ``calibration_save_period_s`` and at shutdown.
"""

from __future__ import annotations

import functools
import math
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rcl_interfaces.msg import SetParametersResult
from rclpy.service import Service
from std_msgs.msg import Header

from carbon_ai_msgs.msg import CalibratedEstimate, CarbonEstimate, VehicleState
from carbon_ai_msgs.srv import SwapModel
from carbon_ai_nodes.carbon.carbon_estimator import (
    CarbonEstimator,
    CarbonInferenceParams,
    MeasuredFuelError,
    StateInput,
    validate_state,
)
from carbon_ai_nodes.carbon.emission_model import FUEL_CO2_G_PER_L, physics_rates
from carbon_ai_nodes.carbon.model_file import SHIPPED_MODEL
from carbon_ai_nodes.carbon.model_signature import load_public_key, verify_model
from carbon_ai_nodes.carbon.residual_backend import Selection, load_backend, select_backend
from carbon_ai_nodes.carbon.ros.conversions import carbon_estimate, header_copy, new_carbon_estimate, state_input
from carbon_ai_nodes.carbon.vehicle_calibration import (
    CalibrationConfig,
    CalibrationSample,
    RollingError,
    VehicleCalibration,
    calibration_path,
)
from carbon_ai_nodes.common.errors import ConfigError, InputRejectedError, ModelError
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile, load_profile
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, run_node

INPUT = "vehicle_state"


def resolve_model_path(value: str) -> str:
    """'' = the shipped model, 'none' = no model (physics only), else the path itself."""
    if value == "":
        return str(SHIPPED_MODEL)
    return "" if value.lower() == "none" else value


class Asset:
    """One served vehicle: its estimator, publisher and last accepted stamp."""

    def __init__(self, name: str, estimator: CarbonEstimator, pub) -> None:
        self.name = name
        self.estimator = estimator
        self.pub = pub
        self.last_stamp_s = -math.inf
        self.measured_lph = math.nan  # the fuel meter's reading in the last accepted state
        self.fuel_error = MeasuredFuelError()
        self.out = new_carbon_estimate()  # refilled per estimate; publish serialises it synchronously
        self.calibration: VehicleCalibration | None = None  # None: not a combustion road vehicle, or switched off
        self.calibration_file = ""
        self.calibration_pub = None
        self.generic_error = RollingError(60.0)  # the generic physics model against the fuel meter, last minute


class CarbonInference(CarbonNode[CarbonInferenceParams]):
    """Thin node around core.carbon_estimator; backends from carbon_ai_nodes.carbon.residual_backend."""

    def __init__(self) -> None:
        super().__init__("carbon_inference", CarbonInferenceParams)
        self.assets: list[Asset] = []
        self.selection: Selection | None = None
        self.pending: list[tuple[Asset, StateInput, Header, int]] = []
        self.count = 0
        self.ood_count = 0
        self.max_latency_us = 0
        self.max_batch_size = 0
        self.model_error = ""
        self._prepared: tuple[tuple, Selection] | None = None
        self._srv: Service | None = None
        self.public_key: Ed25519PublicKey | None = None  # set: only models the fleet key signed for us are run
        self.vehicle_classes: list[str] = []  # the profile names a model's manifest must cover
        self.add_on_set_parameters_callback(self._check_model_change)

    # ------------------------------------------------------------------ lifecycle
    def configure(self, params: CarbonInferenceParams) -> None:
        if not params.vehicle_profile:
            raise ConfigError("carbon_inference.vehicle_profile='': a vehicle profile YAML is required")
        names = list(params.assets) or [""]
        files = list(params.asset_profiles) or [params.vehicle_profile] * len(names)
        if len(files) != len(names):
            raise ConfigError(f"carbon_inference.asset_profiles: {len(files)} entries for {len(names)} assets")
        profiles = [load_profile(f) for f in files]
        self.public_key = load_public_key(params.model_public_key) if params.model_public_key else None
        self.vehicle_classes = sorted({p.name for p in profiles})
        self.selection = self._select(params)
        self.get_logger().info(self.selection.describe())
        self.assets = []
        for name, profile in zip(names, profiles, strict=False):
            prefix = f"{name.strip('/')}/" if name else ""
            est = CarbonEstimator(profile, self.selection.backend, grid_gco2_per_kwh=params.grid_gco2_per_kwh)
            asset = Asset(name or profile.name, est, self.publisher(CarbonEstimate, f"{prefix}carbon_estimate",
                                                                    qos.command(depth=params.queue_depth)))
            self.assets.append(asset)
            self._setup_calibration(asset, profile, prefix, params)
            self.subscription(VehicleState, f"{prefix}{INPUT}", functools.partial(self._on_state, asset),
                              qos.command(depth=params.queue_depth), input_name=f"{prefix}{INPUT}",
                              timeout_s=params.state_timeout_s)
        if params.calibration_file and params.calibration_save_period_s > 0:
            self.timer(params.calibration_save_period_s, self._save_calibrations, name="calibration_save")
        self._srv = self.create_service(SwapModel, "swap_model", self._on_swap)
        self.timer(min(0.5, params.state_timeout_s / 2), self.poll_watchdog, name="watchdog")
        if params.batch_period_s > 0:
            self.timer(params.batch_period_s, self._flush, name="batch")

    def cleanup(self) -> None:
        self._save_calibrations()
        if self._srv is not None:
            self.destroy_service(self._srv)
            self._srv = None
        self.assets, self.pending, self.selection = [], [], None

    def params_changed(self, old: CarbonInferenceParams, new: CarbonInferenceParams) -> None:
        key = (new.model_path, new.backend, new.fp16, new.engine_cache_dir)
        if (old.model_path, old.backend, old.fp16, old.engine_cache_dir) != key:
            try:
                prepared = self._prepared
                self._prepared = None
                self._install(prepared[1] if prepared and prepared[0] == key else self._select(new))
            except (ModelError, ConfigError) as exc:
                self.model_error = str(exc)
                self.get_logger().error(f"model change refused, still serving "
                                        f"{self.selection.backend.model_id if self.selection else 'nothing'}: {exc}")
        if not (math.isnan(old.grid_gco2_per_kwh) and math.isnan(new.grid_gco2_per_kwh)):
            for a in self.assets:
                a.estimator.grid_gco2_per_kwh = new.grid_gco2_per_kwh

    # ------------------------------------------------------------------ model
    def _check_model_change(self, changes) -> SetParametersResult:
        """Refuse a model_path/backend change whose model does not load, before it is accepted.

        The new model is loaded here (the old one keeps serving) and installed by params_changed.
        """
        names = {"model_path", "backend", "fp16", "engine_cache_dir"}
        values = {p.name: p.value for p in changes if p.name in names}
        if not values or not self.is_configured:
            return SetParametersResult(successful=True)
        try:
            new = self.params.replace(**values)
        except ConfigError:
            return SetParametersResult(successful=True)  # the declared-parameter validator reports this one
        try:
            selection = self._select(new)
            if selection.backend.name == "physics" and selection.skipped:
                raise ModelError(selection.skipped.get("onnxruntime-cpu") or next(iter(selection.skipped.values())))
        except (ModelError, ConfigError) as exc:
            reason = f"carbon_inference.model_path={new.model_path!r}: {exc}"
            return SetParametersResult(successful=False, reason=reason)
        self._prepared = ((new.model_path, new.backend, new.fp16, new.engine_cache_dir), selection)
        return SetParametersResult(successful=True)

    def _select(self, params: CarbonInferenceParams, model_path: str | None = None) -> Selection:
        path = resolve_model_path(params.model_path) if model_path is None else model_path
        backend = params.backend
        if not path and backend == "auto":
            backend = "physics"
        if path and backend != "physics" and self.public_key is not None:
            try:
                verify_model(path, self.public_key, self.vehicle_classes)
            except ModelError as exc:
                if model_path is not None or backend != "auto":
                    raise  # a swap or a change is refused (the old model keeps serving); an explicit backend too
                return Selection(load_backend("physics", ""), {"signature": str(exc)})  # start-up: physics serves
        try:
            return select_backend(path, backend, cache_dir=params.engine_cache_dir, fp16=params.fp16)
        except ModelError as exc:
            raise ConfigError(f"carbon_inference.backend={backend!r}: {exc}") from None

    def _install(self, selection: Selection) -> None:
        if selection.backend.name == "physics" and selection.skipped and self.selection is not None \
                and self.selection.backend.name != "physics":
            # auto fell through to physics: every model backend refused the new file; keep serving the old one.
            reason = selection.skipped.get("onnxruntime-cpu") or next(iter(selection.skipped.values()))
            raise ModelError(reason)
        self.selection = selection
        for a in self.assets:
            a.estimator.set_backend(selection.backend)
        self.model_error = ""
        self.get_logger().info(f"now serving: {selection.describe()}")

    def _on_swap(self, request: SwapModel.Request, response: SwapModel.Response) -> SwapModel.Response:
        try:
            if not self.is_configured:
                raise ModelError("node is not configured")
            if not request.model_path:
                raise ModelError("model_path is empty")
            selection = self._select(self.params, request.model_path)
            self._install(selection)
            response.success = True
            response.message = f"serving {selection.backend.model_id}"
        except (ModelError, ConfigError) as exc:
            self.model_error = str(exc)
            self.get_logger().error(f"swap_model refused, old model keeps serving: {exc}")
            response.success = False
            response.message = str(exc)
        if self.selection is not None:
            response.model_id = self.selection.backend.model_id
            response.backend = self.selection.backend.name
        return response

    # ------------------------------------------------------------------ data path
    def _on_state(self, asset: Asset, msg: VehicleState) -> None:
        arrival_ns = time.perf_counter_ns()
        name = f"{asset.name}/{INPUT}" if self.params.assets else INPUT
        now_s = self.now_s()  # read once: the stamp, the age check and the watchdog share it
        try:
            s = state_input(msg, now_s)
            validate_state(s, asset.estimator.profile)
            if s.stamp_s <= asset.last_stamp_s:
                raise InputRejectedError("out_of_order", f"stamp {s.stamp_s:.3f} <= last {asset.last_stamp_s:.3f}")
            age = now_s - s.stamp_s
            if self.params.max_state_age_s > 0 and age > self.params.max_state_age_s:
                raise InputRejectedError("stale", f"state is {age:.2f} s old")
        except InputRejectedError as exc:
            self.reject(name, exc.reason, exc.detail)
            return
        asset.last_stamp_s = s.stamp_s
        asset.measured_lph = msg.fuel_rate_lph
        self.accept(name, now_s)
        if self.params.batch_period_s > 0:
            # The message itself is not kept: a publisher (composed, on the intra-process bus) refills it.
            self.pending.append((asset, s, header_copy(msg.header), arrival_ns))
            self._calibrate(asset, s, msg)
            return
        e = asset.estimator.estimate(s, validated=True)
        self._publish(asset, e, msg.header, arrival_ns)
        self._calibrate(asset, s, msg)  # after the estimate is out: learning adds nothing to its latency

    # ------------------------------------------------------------------ calibration
    def _setup_calibration(self, asset: Asset, profile: VehicleProfile, prefix: str,
                           params: CarbonInferenceParams) -> None:
        if not params.calibration:
            return
        if profile.kind != "road" or profile.is_electric:
            self.get_logger().info(f"{asset.name}: no calibration ({profile.kind}, {profile.fuel}: the calibrated "
                                   "model covers combustion road vehicles)")
            return
        config = CalibrationConfig(payload_reset_fraction=params.calibration_payload_reset_fraction,
                                   sample_period_s=params.calibration_sample_period_s)
        path = calibration_path(params.calibration_file, asset.name if params.assets else "")
        loaded, warning = VehicleCalibration.load(path, profile, config) if path else (None, "")
        if warning:
            self.get_logger().warning(warning)
        elif loaded is not None:
            self.get_logger().info(f"{asset.name}: calibration reloaded from {path} (mass {loaded.mass_kg:.0f} kg)")
        asset.calibration = loaded or VehicleCalibration(profile, config)
        asset.calibration_file = path
        asset.calibration_pub = self.publisher(CalibratedEstimate, f"{prefix}calibrated_estimate",
                                               qos.command(depth=params.queue_depth))

    def _calibrate(self, asset: Asset, s: StateInput, msg: VehicleState) -> None:
        """Predict with the calibrated model, then learn from the state; publish both beside the generic one."""
        cal = asset.calibration
        if cal is None:
            return
        p = cal.profile
        pred = cal.predict(s.speed_mps, s.accel_mps2, s.grade, s.payload_kg)
        cal.update(CalibrationSample(s.stamp_s, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg,
                                     s.engine_speed_rpm, s.engine_load_pct, msg.fuel_rate_lph))
        generic = physics_rates(p, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg,
                                engine_speed_rpm=s.engine_speed_rpm, coolant_temp_c=s.coolant_temp_c)
        asset.generic_error.add(s.stamp_s, generic.fuel_lph, msg.fuel_rate_lph)
        params = cal.parameters()
        mass, mass_sigma = params["mass_kg"]
        measured = msg.fuel_rate_lph * FUEL_CO2_G_PER_L[p.fuel] / 3600.0 if math.isfinite(msg.fuel_rate_lph) \
            else math.nan
        out = CalibratedEstimate(header=header_copy(msg.header), asset_id=s.asset_id, co2_rate_g_s=pred.co2_g_s,
                                 fuel_rate_lph=pred.fuel_lph, uncertainty_g_s=pred.sigma_co2_g_s,
                                 generic_co2_rate_g_s=generic.co2_g_s, measured_co2_rate_g_s=measured,
                                 is_confident=cal.is_confident(self.params.calibration_confidence),
                                 mass_kg=mass, mass_sigma_kg=mass_sigma, parameter_names=list(params),
                                 parameter_values=[v for v, _ in params.values()],
                                 parameter_sigmas=[sd for _, sd in params.values()])
        if asset.calibration_pub is not None:
            asset.calibration_pub.publish(out)

    def _save_calibrations(self) -> None:
        for a in self.assets:
            if a.calibration is None or not a.calibration_file:
                continue
            try:
                a.calibration.save(a.calibration_file)
            except OSError as exc:
                self.get_logger().error(f"{a.name}: calibration not saved to {a.calibration_file}: {exc}")

    def _flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        self.max_batch_size = max(self.max_batch_size, len(batch))
        by_estimator: dict[int, list] = {}
        for item in batch:
            by_estimator.setdefault(id(item[0].estimator), []).append(item)
        for items in by_estimator.values():
            est = items[0][0].estimator
            results = est.estimate_batch([s for _, s, _, _ in items])
            for (asset, _, header, arrival_ns), e in zip(items, results, strict=False):
                self._publish(asset, e, header, arrival_ns)

    def _publish(self, asset: Asset, e, header: Header, arrival_ns: int) -> None:
        latency_us = (time.perf_counter_ns() - arrival_ns) // 1000
        asset.pub.publish(carbon_estimate(e, header, latency_us, into=asset.out))
        asset.fuel_error.update(e.stamp_s, e.fuel_rate_lph, asset.measured_lph)
        self.count += 1
        self.ood_count += e.is_out_of_distribution
        self.max_latency_us = max(self.max_latency_us, latency_us)

    def diagnostics_values(self) -> dict[str, str]:
        out = {"estimates": str(self.count), "out_of_distribution": str(self.ood_count),
               "max_latency_us": str(self.max_latency_us), "max_batch_size": str(self.max_batch_size)}
        if self.selection is not None:
            out.update(backend=self.selection.backend.name, model_id=self.selection.backend.model_id)
            for k, v in self.selection.skipped.items():
                out[f"skipped.{k}"] = v[:200]
        if self.model_error:
            out["model_error"] = self.model_error[:300]
        for a in self.assets:  # the estimator against the fuel meter (a real one, or the simulator's plant engine)
            prefix = f"{a.name}." if len(self.assets) > 1 else ""
            out[f"{prefix}fuel_model_vs_measured_pct"] = f"{a.fuel_error.error_pct:.1f}"
            out[f"{prefix}fuel_measured_l"] = f"{a.fuel_error.measured_l:.4f}"
            out[f"{prefix}fuel_model_l"] = f"{a.fuel_error.model_l:.4f}"
            if a.calibration is not None:
                out.update({f"{prefix}calibration.{k}": v for k, v in a.calibration.diagnostics().items()})
                out[f"{prefix}calibration.generic_error_60s_pct"] = f"{a.generic_error.error_pct:.1f}"
                out[f"{prefix}calibration.confident"] = str(a.calibration.is_confident(
                    self.params.calibration_confidence))
        return out


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes carbon_inference``."""
    sys.exit(run_node(CarbonInference, args))


if __name__ == "__main__":
    main()
