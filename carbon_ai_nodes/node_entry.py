"""How every node process starts: ``ros2 run carbon_ai_nodes <node>`` / ``ros2 launch`` (the console scripts of
setup.py resolve ``carbon_ai_nodes.node_entry:<node>``) and the runner (``python -m carbon_ai_nodes.node_entry
<node> [args]``).

A node spends about a second importing rclpy, numpy and the message packages before ``host_nodes`` installs its
SIGINT/SIGTERM handlers. ``ros2 launch`` shutting down just after the lifecycle manager restarted a node sends its
SIGINT into that second, and Python's default handler printed a KeyboardInterrupt traceback from deep inside
numpy's import. The handlers here are installed first, from a module that imports nothing heavy: a stop signal
before the node runs ends the process at once with status 0 (nothing was started, so nothing needs stopping).
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from carbon_ai_nodes.node_registry import BY_NAME, node_module


class StoppedWhileStarting(SystemExit):
    """Raised by a stop signal that arrives before the node's own handlers exist; exits with status 0."""


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    raise StoppedWhileStarting(0)


def run(name: str) -> Any:
    """Start node ``name``: quiet stop handlers first, then import its module and call its ``main()`` (which
    reads ``sys.argv``, as ``rclpy.init`` does)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_while_starting)
    return importlib.import_module(node_module(name)).main()


def __getattr__(name: str) -> Callable[[], Any]:
    """``node_entry.fusion`` etc.: the console-script entry of each node in node_registry."""
    if name not in BY_NAME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return lambda: run(name)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BY_NAME:
        print(f"usage: python -m {__spec__.name if __spec__ else 'carbon_ai_nodes.node_entry'} NODE [args]"
              f" (NODE: {', '.join(BY_NAME)})", file=sys.stderr)
        sys.exit(2)
    name = sys.argv.pop(1)  # the node sees the argv it would have had as ``python -m <its module>``
    sys.exit(run(name))
