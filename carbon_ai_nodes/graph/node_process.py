"""Start carbon_ai nodes as real processes over real DDS: the runner, the demo, the benchmarks and the tests all
launch nodes this way. Nothing here mocks ROS, and nothing here imports rclpy (a launcher needs no context).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from carbon_ai_nodes.node_registry import node_module

# Loopback UDP, no shared memory: see the comment in the file for why.
ISOLATED_FASTDDS_PROFILE = Path(__file__).with_name("fastdds_loopback_udp.xml")


def isolated_ros_env(domain_id: int | None = None) -> dict[str, str]:
    """Environment variables that keep DDS traffic on this host and in a domain of its own.

    Traffic stays on the loopback interface through a Fast DDS profile (UDP on 127.0.0.1, no shared memory),
    not through ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: that setting makes rmw_fastrtps add its
    shared-memory transport, whose ports a SIGKILLed node leaves behind for the next participant to block on.
    The localhost settings are therefore reset explicitly, since a caller's environment may carry them.
    """
    if domain_id is None:
        domain_id = random.Random(os.getpid() ^ time.time_ns()).randint(1, 100)
    profile = str(ISOLATED_FASTDDS_PROFILE)
    env = {
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",  # Jazzy and newer; the profile keeps it to loopback
        "ROS_LOCALHOST_ONLY": "0",  # Humble / Iron spelling of the same switch
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,  # Fast DDS 3 (Jazzy and newer)
        "FASTRTPS_DEFAULT_PROFILES_FILE": "",  # cleared: a caller's value would make Fast DDS 3 warn
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        "PYTHONUNBUFFERED": "1",
    }
    # Fast DDS 2 (Humble) reads only the old name; Fast DDS 3 reads the new one and warns about the old one in
    # every process (a warning each node's summary would count as a fault), so the old name only without 3.
    if not _fast_dds_3():
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    return env


def _fast_dds_3() -> bool:
    """Whether Fast DDS 3 (libfastdds.so.3) is installed where the nodes load it from: this environment's lib/,
    a sourced ROS (AMENT_PREFIX_PATH) or LD_LIBRARY_PATH. False when not found (then both names are set)."""
    dirs = [Path(sys.prefix) / "lib"]
    dirs += [Path(p) / "lib" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    return any(next(d.glob("libfastdds.so.3*"), None) is not None for d in dirs if d.is_dir())


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _load_prctl() -> Any:
    """libc's prctl, looked up once here in the parent: a forked child must not dlopen (see die_with_parent)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when the process starting it dies, however it dies
    (SIGKILL, the OOM killer): each node then shuts down as on any SIGTERM (a bridge publishes its safe state;
    all at once, not in the runner's order) instead of running on as an orphan. None (nothing to run) off Linux.

    Caveats: the signal is tied to the *thread* that forks, so nodes must be started from a thread that lives
    as long as they should (the runner starts and restarts them from the main thread). ``preexec_fn`` runs
    between fork and exec, where other threads of the parent (the run command's recorder spins rclpy in one)
    may have held locks the child now inherits forever: the child only calls the prctl pointer resolved above,
    getppid and kill (no import, no dlopen, no logging). A parent that died before the prctl took effect is
    caught by comparing the parent pid afterwards.
    """
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent is already gone: nothing will send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def popen_node(argv: Sequence[str], out: IO[bytes], env: Mapping[str, str]) -> subprocess.Popen:
    """Start a node process: output to ``out``, its own session (a terminal's Ctrl-C reaches the runner, which
    stops the nodes in order) and, on Linux, SIGTERM when the starting process dies (:func:`die_with_parent`)."""
    return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                            start_new_session=True, preexec_fn=die_with_parent())


def _format_param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_param(v) for v in value) + "]"
    if isinstance(value, str):
        return value or "''"  # an empty value would not parse
    return repr(value)


def node_ros_args(*, namespace: str = "", remaps: Mapping[str, str] | None = None,
                  params_file: str | Path | None = None, params: Mapping[str, Any] | None = None,
                  node_name: str | None = None) -> list[str]:
    """The arguments after ``--ros-args`` that give one node its name, namespace, remaps and parameters."""
    args: list[str] = []
    if node_name:
        args += ["-r", f"__node:={node_name}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for src, dst in (remaps or {}).items():
        args += ["-r", f"{src}:={dst}"]
    if params_file:
        args += ["--params-file", str(params_file)]
    for key, value in (params or {}).items():
        args += ["-p", f"{key}:={_format_param(value)}"]
    return args


class NodeProcess:
    """One carbon_ai node (``python -m carbon_ai_nodes.node_entry <node>``) as a separate process.

    Output goes to files (never a pipe that could fill and block the node). Use as a context manager;
    :meth:`stop` sends SIGTERM (or the given signal) and returns the exit status.
    """

    def __init__(
        self,
        module: str,
        *,
        params: Mapping[str, Any] | None = None,
        params_file: str | Path | None = None,
        namespace: str = "",
        remaps: Mapping[str, str] | None = None,
        node_name: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        ros_args = node_ros_args(namespace=namespace, remaps=remaps, params_file=params_file, params=params,
                                 node_name=node_name)
        node_module(module)  # an unknown node name fails here, naming the known ones
        self.argv = [sys.executable, "-m", "carbon_ai_nodes.node_entry", module, *extra_args]
        if ros_args:
            self.argv += ["--ros-args", *ros_args]
        # Tests point CARBON_AI_LOG_DIR at pytest's temporary directory, so logs do not pile up in /tmp.
        log_dir = os.environ.get("CARBON_AI_LOG_DIR") or None
        self._out = tempfile.NamedTemporaryFile(prefix=f"{module}-", suffix=".log", dir=log_dir, delete=False)
        self.log_path = Path(self._out.name)
        self._read_offset = 0
        self.proc = popen_node(self.argv, self._out, env or {})
        self.killed = False  # stop() had to SIGKILL it: it did not end within its timeout

    @property
    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def new_lines(self) -> list[str]:
        """Complete lines printed since the last call (a watcher's incremental read of the output file)."""
        with self.log_path.open("rb") as f:
            f.seek(self._read_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._read_offset += end
        return data[:end].decode(errors="replace").splitlines()

    def poll(self) -> int | None:
        """Exit status, or None while running."""
        return self.proc.poll()

    def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit by itself; raises subprocess.TimeoutExpired."""
        return self.proc.wait(timeout=timeout_s)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        """Send ``sig`` and wait; SIGKILL after ``timeout_s`` (then :attr:`killed` is True). Returns the exit
        status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._dump_stacks()
                self.proc.kill()
                self.proc.wait()
                self.killed = True
        self._out.close()
        return self.proc.returncode

    def _dump_stacks(self, wait_s: float = 1.0) -> None:
        """Before the SIGKILL of a process that did not stop: its signal masks (from /proc) and its threads'
        stacks (SIGUSR1, see stop_signals.dump_stacks_on_sigusr1) go to the end of its log, to find out why."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            status = ""
        masks = " ".join(line.replace("\t", "") for line in status.splitlines() if line.startswith("Sig"))
        self._out.write(f"\n[carbon-ai] did not stop: {masks}; its threads' stacks follow\n".encode())
        self._out.flush()
        self.proc.send_signal(signal.SIGUSR1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait_s)  # (the dump takes milliseconds; a process that ends meanwhile is fine)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
