"""The managed-node base every carbon_ai node derives from, and the ``main()`` runner.

Lifecycle (as Nav2 and ros2_control nodes behave, so the stack's managers can bring nodes up in order):

- construct: declare parameters (so ``ros2 param`` sees them before configure)
- configure: load and validate parameters, build the core, create publishers/subscriptions/timers
- activate: outputs start (lifecycle publishers enabled, timers running)
- deactivate: the subclass puts its outputs in a safe state, then outputs stop
- cleanup / shutdown: everything created in configure is destroyed

Plain mode: with the parameter ``autostart`` true (the default) the node configures and activates itself at
start, and a configure failure exits the process with status 1 and one line naming the bad parameter.
With ``autostart:=false`` it waits in ``unconfigured`` for a lifecycle manager.

Subclasses implement :meth:`CarbonNode.configure` (and optionally ``activate``, ``deactivate``,
``cleanup``, ``params_changed``), and create their ROS entities through ``self.publisher``,
``self.subscription`` and ``self.timer`` so cleanup and activation are handled here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.signals import SignalHandlerOptions

from carbon_ai_nodes.common.errors import ConfigError, ParameterError
from carbon_ai_nodes.common.health import HealthMonitor
from carbon_ai_nodes.common.params import ParamSet, param
from carbon_ai_nodes.graph.run_watch import AUTOSTARTED
from carbon_ai_nodes.graph.stop_signals import dump_stacks_on_sigusr1, sets_event
from carbon_ai_nodes.ros import parameters as ros_params
from carbon_ai_nodes.ros import qos, realtime
from carbon_ai_nodes.ros.intra_process import BusSubscription, IntraProcessBus, is_stamped

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

_EventsExecutor: Callable[..., Executor] | None
try:  # Jazzy and newer: callbacks dispatched from C++ events, no per-spin wait-set rebuild
    from rclpy.experimental import EventsExecutor

    _EventsExecutor = EventsExecutor
except ImportError:  # Humble, Iron
    _EventsExecutor = None

P = TypeVar("P", bound=ParamSet)
T = TypeVar("T")
SHUTDOWN_FLUSH_S = 1.0  # at most this long, in all, for readers to acknowledge a node's last messages
EXECUTOR_ENV = "CARBON_AI_EXECUTOR"  # "events" (default where available) or "single"


def make_executor(context: Any = None) -> Executor:
    """The executor a carbon_ai process spins its nodes on.

    rclpy's EventsExecutor where this rclpy has it: the SingleThreadedExecutor rebuilds its wait set over
    every entity on each spin (a lifecycle node has a dozen services), in Python; on the project's 2-core
    machine the sensor -> command pipeline's p50 went from about 13 to 8 ms under the same load (see
    ``carbon-ai bench latency``). On Humble, or with ``CARBON_AI_EXECUTOR=single``, the SingleThreadedExecutor.
    """
    if _EventsExecutor is not None and default_executor_kind() == "events":
        return _EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


def configured(value: T | None, what: str) -> T:
    """``value``, which a node's configure built: a clear error, not an AttributeError on None, if it was not."""
    if value is None:
        raise RuntimeError(f"{what} is not set up: the node is unconfigured")
    return value


def default_executor_kind() -> str:
    """``events`` or ``single``: what :func:`make_executor` returns here."""
    if _EventsExecutor is not None and os.environ.get(EXECUTOR_ENV, "events").strip().lower() != "single":
        return "events"
    return "single"


_node_kwargs: dict[str, Any] = {}
_composition: dict[str, IntraProcessBus] = {}


@contextlib.contextmanager
def node_arguments(cli_args: list[str], bus: IntraProcessBus | None = None) -> Iterator[None]:
    """CarbonNodes constructed inside take ``cli_args`` as node-local ``--ros-args`` (namespace, remaps,
    parameters): how the composed container gives each node its own while node classes take no arguments.
    With ``bus`` their stamped publishers and subscriptions also deliver directly to the other nodes on it
    (intra_process.py): only nodes spun by the same executor thread may share one."""
    _node_kwargs["cli_args"] = list(cli_args)
    if bus is not None:
        _composition["bus"] = bus
    try:
        yield
    finally:
        _node_kwargs.pop("cli_args", None)
        _composition.pop("bus", None)


class BusPublisher:
    """A lifecycle publisher that first hands each message to the subscribers on its node's intra-process bus,
    then publishes it through DDS if anyone else is subscribed. Everything else is the wrapped publisher's."""

    __slots__ = ("pub", "bus", "topic", "latched", "_count", "_count_until_s")

    COUNT_TTL_S = 0.05  # how long a matched-subscriber count is reused (the query costs ~5 % of a chain tick)

    def __init__(self, pub: Any, bus: IntraProcessBus, profile: QoSProfile) -> None:
        self.pub = pub
        self.bus = bus
        self.topic = pub.topic_name
        # A transient-local writer must hold the last message for subscribers that join later: always publish.
        self.latched = profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        self._count = 0
        self._count_until_s = -1.0

    def publish(self, msg: Any) -> None:
        """Deliver ``msg`` on the bus (synchronously) and through DDS to subscribers off the bus."""
        pub = self.pub
        if not pub.is_activated:
            return  # as the lifecycle publisher itself: nothing goes out while inactive
        local = self.bus.deliver(self.topic, msg)
        now_s = time.monotonic()
        if now_s > self._count_until_s:
            self._count, self._count_until_s = pub.get_subscription_count(), now_s + self.COUNT_TTL_S
        # Every bus subscriber also has a DDS subscription, matched to this publisher in-process at creation;
        # more matches than that are subscribers off the bus (other threads and processes, rviz).
        if self.latched or self._count > local:
            pub.publish(msg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pub, name)


def executor_kind(executor: Executor) -> str:
    """``events`` or ``single`` (for logs and benchmark reports)."""
    return "single" if isinstance(executor, SingleThreadedExecutor) else "events"


@dataclasses.dataclass(frozen=True)
class NodeBaseParams(ParamSet):
    """Parameters every carbon_ai node has, besides those of its concern."""

    SECTION: ClassVar[str] = "node"
    autostart: bool = param(
        True, "Configure and activate at start (plain mode); false waits for a lifecycle manager",
        read_only=True,
    )
    diagnostics_period_s: float = param(1.0, "Period of the /diagnostics report", unit="s", gt=0.0, max=60.0)
    qos_deadline_events: bool = param(
        False, "Also request DDS deadlines on inputs (only if every publisher offers one: see qos.py)",
        read_only=True,
    )


class CarbonNode(LifecycleNode, Generic[P]):
    """Managed node with validated parameters, guarded callbacks, input watchdog and /diagnostics."""

    def __init__(self, node_name: str, params_type: type[P], **kwargs: Any) -> None:
        super().__init__(node_name, **{**_node_kwargs, **kwargs})
        self.params_type = params_type
        ros_params.declare(self, NodeBaseParams)
        ros_params.declare(self, params_type)
        self.base_params: NodeBaseParams = ros_params.load(self, NodeBaseParams)
        self._params: P | None = None
        self.health = HealthMonitor()
        self.is_active = False
        self.config_error: str | None = None
        self._carbon_entities: list[Any] = []
        self._carbon_timers: list[Any] = []
        self._bus: IntraProcessBus | None = _composition.get("bus")
        self._bus_subscriptions: list[BusSubscription] = []
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics())
        self._diag_timer = self.create_timer(self.base_params.diagnostics_period_s, self.publish_diagnostics)
        self.add_on_set_parameters_callback(
            ros_params.on_set_validator(params_type, lambda: self._params, self._apply_params)
        )
        self.add_on_set_parameters_callback(
            ros_params.on_set_validator(NodeBaseParams, lambda: self.base_params, self._apply_base_params)
        )

    @property
    def params(self) -> P:
        """The validated parameters, between configure and cleanup (callbacks run only then)."""
        if self._params is None:
            raise RuntimeError(f"node {self.get_name()}: parameters read while unconfigured")
        return self._params

    @property
    def is_configured(self) -> bool:
        """True between a successful configure and cleanup."""
        return self._params is not None

    # ----------------------------------------------------------------- subclass hooks
    def configure(self, params: P) -> None:
        """Build the core and create publishers/subscriptions/timers. Raise ConfigError to refuse."""
        raise NotImplementedError

    def activate(self) -> None:
        """Called when outputs start."""

    def deactivate(self) -> None:
        """Called before outputs stop: publish a safe state here if the node drives anything."""

    def cleanup(self) -> None:
        """Release what configure allocated beyond ROS entities (files, sockets, sessions)."""

    def params_changed(self, old: P, new: P) -> None:
        """A validated runtime parameter change was accepted; ``self.params`` is already ``new``."""

    def diagnostics_values(self) -> dict[str, str]:
        """Extra key/values for this node's diagnostics report."""
        return {}

    # ----------------------------------------------------------------- entity helpers
    def now_s(self) -> float:
        """Node clock time in seconds (sim time when use_sim_time is set)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def publisher(self, msg_type: Any, topic: str, profile: QoSProfile) -> Any:
        """A lifecycle publisher: publishes only while active; destroyed at cleanup. In a composed process
        with an intra-process bus, stamped messages also go directly to the bus's subscribers."""
        pub = self.create_lifecycle_publisher(msg_type, topic, profile)
        self._carbon_entities.append(pub)
        if self._bus is not None and is_stamped(msg_type):
            return BusPublisher(pub, self._bus, profile)
        return pub

    def subscription(
        self,
        msg_type: Any,
        topic: str,
        callback: Callable[[Any], None],
        profile: QoSProfile,
        *,
        input_name: str | None = None,
        timeout_s: float = 0.0,
        raw: bool = False,
    ) -> Any:
        """A subscription whose callback runs only while active and never raises.

        With ``input_name`` and ``timeout_s > 0`` the input is watched: the watchdog marks it stale when
        nothing arrives in time (see :meth:`poll_watchdog`); QoS deadline events, when enabled, count too.
        With ``raw`` the callback gets the serialised bytes (to size-check before deserialising) and the
        intra-process bus is not used.
        """
        name = input_name or topic
        event_callbacks = None
        if timeout_s > 0:
            self.health.watchdog.watch(name, timeout_s, self.now_s())
            if self.base_params.qos_deadline_events:
                from rclpy.duration import Duration

                profile.deadline = Duration(seconds=timeout_s)
                event_callbacks = SubscriptionEventCallbacks(
                    deadline=lambda info: self.health.watchdog.missed_deadlines.update(
                        {name: info.total_count_change}
                    )
                )
        run = self.guarded(name, callback)
        bus = self._bus if is_stamped(msg_type) and not raw else None
        bus_sub = BusSubscription(run) if bus is not None else None
        sub = self.create_subscription(
            msg_type, topic, run if bus_sub is None else bus_sub.from_middleware, profile,
            event_callbacks=event_callbacks, raw=raw,
        )
        self._carbon_entities.append(sub)
        if bus is not None and bus_sub is not None:
            bus.attach(sub.topic_name, bus_sub)
            self._bus_subscriptions.append(bus_sub)
        return sub

    def timer(self, period_s: float, callback: Callable[[], object], name: str = "timer") -> Any:
        """A timer that runs only while active (cancelled on deactivate, reset on activate)."""
        run = self.guarded(name, callback, needs_active=False)
        # A zero-argument callable: executors that can pass a TimerInfo (the EventsExecutor) would hand one to
        # a *args wrapper, and the callbacks take none.
        t = self.create_timer(period_s, lambda: run())
        if not self.is_active:
            t.cancel()
        self._carbon_timers.append(t)
        return t

    def guarded(self, where: str, callback: Callable[..., object], needs_active: bool = True) -> Callable[..., None]:
        """Wrap a callback: skip while inactive, and turn any exception into a counted, logged-once error."""

        def run(*args: Any) -> None:
            if needs_active and not self.is_active:
                return
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 - the boundary where nothing may escape
                if self.health.internal_error(where):
                    self.get_logger().error(f"{where}: {type(exc).__name__}: {exc} (counted on /diagnostics)")

        return run

    def reject(self, input_name: str, reason: str, detail: str = "") -> None:
        """Count a rejected input and log it once per new rejection state."""
        if self.health.rejected(input_name, reason):
            self.get_logger().warning(f"rejecting {input_name}: {reason}{' (' + detail + ')' if detail else ''}")

    def accept(self, input_name: str, now_s: float | None = None) -> None:
        """Count an accepted input (at ``now_s``, s, if the caller already read the clock); logs on recovery."""
        if self.health.accepted(input_name, self.now_s() if now_s is None else now_s):
            self.get_logger().info(f"{input_name}: receiving valid data again")

    def poll_watchdog(self, now_s: float | None = None) -> list[str]:
        """Check input timeouts at ``now_s`` (s; default: the clock); logs and returns the newly stale inputs."""
        newly = self.health.watchdog.poll(self.now_s() if now_s is None else now_s)
        for name in newly:
            self.get_logger().warning(f"{name}: no valid message within its timeout; marked stale")
        return newly

    # ----------------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        """Publish this node's health report on /diagnostics (also while inactive)."""
        try:
            state = self._state_machine.current_state[1]
        except Exception:  # noqa: BLE001 - internal attribute; the report must go out regardless
            state = "active" if self.is_active else "inactive"
        extra = {"lifecycle_state": state}
        if self.config_error:
            extra["config_error"] = self.config_error
        if self._bus_subscriptions:
            extra["intra_process_inputs"] = str(len(self._bus_subscriptions))
            extra["intra_process_dds_duplicates_dropped"] = str(
                sum(b.dropped_duplicates for b in self._bus_subscriptions))
        try:
            extra.update(self.diagnostics_values())
        except Exception as exc:  # noqa: BLE001
            self.health.internal_error("diagnostics_values")
            extra["diagnostics_error"] = str(exc)
        snap = self.health.snapshot(extra)
        status = DiagnosticStatus(
            level=bytes([snap.level]),
            name=f"carbon_ai: {self.get_fully_qualified_name()}",
            message=self.config_error or snap.message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=v) for k, v in snap.values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    # ----------------------------------------------------------------- lifecycle plumbing
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load + validate parameters, then let the subclass build its core and entities."""
        try:
            params = ros_params.load(self, self.params_type)
            self._params = params
            self.configure(params)
        except ParameterError as exc:
            return self._refuse_configure(f"parameter {exc}")
        except ConfigError as exc:
            return self._refuse_configure(str(exc))
        except Exception as exc:  # noqa: BLE001 - a failed configure must leave the node unconfigured, not crash
            return self._refuse_configure(f"configure failed: {type(exc).__name__}: {exc}")
        self.config_error = None
        return TransitionCallbackReturn.SUCCESS

    def _refuse_configure(self, reason: str) -> TransitionCallbackReturn:
        self.config_error = reason
        self.get_logger().error(reason)
        self._destroy_entities()
        self._params = None
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable outputs and timers."""
        result = super().on_activate(state)
        self.is_active = True
        self.health.watchdog.rearm(self.now_s())  # inputs get a full timeout after activation
        for t in self._carbon_timers:
            t.reset()
        self.activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Let the subclass go safe, then stop outputs."""
        self._go_inactive()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy everything configure created."""
        self.cleanup()
        self._destroy_entities()
        self._params = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Go safe and release, from whatever state."""
        if self.is_active:
            self._go_inactive()
        if self.is_configured:
            self.cleanup()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """An exception escaped a transition: go safe, release, and allow a fresh configure."""
        self.get_logger().error(f"error during transition from {state.label}; releasing")
        return self.on_shutdown(state)

    def _go_inactive(self) -> None:
        try:
            self.deactivate()
        finally:
            self.is_active = False
            for t in self._carbon_timers:
                t.cancel()

    def _destroy_entities(self) -> None:
        if self._bus is not None:  # subscriptions are on the bus only when there is one
            for bus_sub in self._bus_subscriptions:
                self._bus.detach(bus_sub)
        self._bus_subscriptions.clear()
        for t in self._carbon_timers:
            self.destroy_timer(t)
        self._flush_publishers()
        for entity in self._carbon_entities:
            if hasattr(entity, "publish"):
                # Humble has no destroy_lifecycle_publisher; there the plain destroy is right.
                getattr(self, "destroy_lifecycle_publisher", self.destroy_publisher)(entity)
            else:
                self.destroy_subscription(entity)
        self._carbon_timers.clear()
        self._carbon_entities.clear()
        self.health.watchdog.clear()

    def _flush_publishers(self, budget_s: float = SHUTDOWN_FLUSH_S) -> None:
        # A reliable writer deleted before its readers acknowledged drops what it still holds: the bridge's
        # safe setpoint, published while deactivating, would then never reach the actuator.
        from rclpy.duration import Duration

        deadline_ns = time.monotonic_ns() + int(budget_s * 1e9)
        for entity in self._carbon_entities:
            left_ns = deadline_ns - time.monotonic_ns()
            if hasattr(entity, "wait_for_all_acked") and left_ns > 0:
                with contextlib.suppress(Exception):  # best effort: shutting down must not fail on it
                    entity.wait_for_all_acked(Duration(nanoseconds=left_ns))

    def _apply_params(self, new: P) -> None:
        old, self._params = self._params, new
        if old is not None:
            self.params_changed(old, new)

    def _apply_base_params(self, new: NodeBaseParams) -> None:
        old, self.base_params = self.base_params, new
        if new.diagnostics_period_s != old.diagnostics_period_s:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(new.diagnostics_period_s, self.publish_diagnostics)


def host_nodes(build: Callable[[], dict[str, CarbonNode]], groups: Callable[[list[str]], list[tuple[list[str], bool]]],
               *, rclpy_args: list[str] | None, shutdown_order: Callable[[list[str]], list[str]] = list,
               on_spinning: Callable[[list[Executor]], None] | None = None) -> int:
    """The one start/stop sequence of every carbon_ai process, one node (:func:`run_node`) or many composed
    (``graph.runner.compose_main``): real-time settings before ``rclpy.init`` (the middleware's threads inherit
    them), SIGINT/SIGTERM only stop the spin, ``build()`` makes the nodes (label -> node), autostarting ones are
    configured and activated, ``groups(labels)`` gives the executor groups as (labels, real-time), one executor
    each; a single group spins on this thread, several on a thread each. On the way out every node deactivates
    (publishing its safe state) while the middleware is still up, in ``shutdown_order``, and is destroyed.

    Returns the exit status: 0 after a clean shutdown, 1 when a node could not be configured (the reason was
    logged as one line naming the parameter), 2 when the process could not start (bad --ros-args, real-time
    settings refused as invalid).
    """
    try:
        rt_priority, refusals = realtime.apply_from_env()
    except ConfigError as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            rclpy.init(args=rclpy_args, signal_handler_options=SignalHandlerOptions.NO)
        except TypeError:  # an rclpy without signal_handler_options: our handlers below replace its own
            rclpy.init(args=rclpy_args)
    except Exception as exc:  # noqa: BLE001 - rcl reports bad --ros-args as a generic RCLError
        print(f"could not start: {exc} (check the --ros-args)", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, sets_event(stop))
    dump_stacks_on_sigusr1()  # the runner asks a node that does not stop for its stacks before SIGKILL
    nodes: dict[str, CarbonNode] = {}
    executors: list[Executor] = []
    threads: list[threading.Thread] = []
    try:
        nodes = build()
        for label, node in nodes.items():
            if node.base_params.autostart:
                node.trigger_configure()
                if not node.is_configured:
                    if len(nodes) > 1:
                        print(f"{label}: could not configure", file=sys.stderr)
                    return 1
                node.trigger_activate()
                node.get_logger().info(AUTOSTARTED)
        plan = groups(list(nodes))
        for labels, _ in plan:
            executor = make_executor()
            for label in labels:
                executor.add_node(nodes[label])
            executors.append(executor)
        realtime.freeze_startup_objects()
        if nodes:
            for refused in refusals:
                next(iter(nodes.values())).get_logger().warning(refused)

        def spin(executor: Executor, realtime_thread: bool) -> None:
            if rt_priority and not realtime_thread:
                realtime.set_thread_ordinary()  # only the sensor -> actuator path runs real-time
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)

        if on_spinning is not None:
            on_spinning(executors)
        if len(executors) == 1:
            spin(executors[0], plan[0][1])
        else:
            threads = [threading.Thread(target=spin, args=(e, rt), daemon=True)
                       for e, (_, rt) in zip(executors, plan, strict=True)]
            for t in threads:
                t.start()
            while not stop.wait(0.1) and rclpy.ok():
                pass
    except ConfigError as exc:  # raised while constructing: a base parameter with a bad value
        print(f"parameter {exc}", file=sys.stderr)
        return 1
    except ExternalShutdownException:
        pass
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2.0)
        for executor in executors:
            # Let go of the nodes' entities before they are destroyed: the EventsExecutor holds them in C++.
            executor.shutdown(timeout_sec=1.0)
        for label in shutdown_order(list(nodes)):
            nodes[label].on_shutdown(LifecycleState(label="shutdown", state_id=0))
            nodes[label].destroy_node()
        rclpy.try_shutdown()
    return 0


def run_node(node_factory: Callable[[], CarbonNode], args: list[str] | None = None) -> int:
    """Run one node until SIGINT/SIGTERM (:func:`host_nodes`); in plain mode configure and activate it first."""
    return host_nodes(lambda: {"node": node_factory()}, lambda labels: [(labels, True)], rclpy_args=args)
