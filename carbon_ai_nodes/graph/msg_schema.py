"""ROS 2 message definitions as MCAP ``ros2msg`` schemas (pure; no ROS imports).

An MCAP file written for Foxglove (or ``ros2 bag``'s MCAP storage) carries, per message type, the type's
``.msg`` text followed by the text of every type it uses, each introduced by a separator line of 80 ``=`` and
``MSG: pkg/Type`` (the "concatenated message definition" of ROS 1 bags, kept by rosbag2 and mcap). This module
builds that text from the ``.msg`` files the ROS packages install under ``<prefix>/share/<pkg>/msg/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from carbon_ai_nodes.common.errors import ConfigError

PRIMITIVES = frozenset({
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "string", "wstring",
})
SEPARATOR = "=" * 80
_ARRAY = re.compile(r"\[[^\]]*\]$")
_BOUND = re.compile(r"<=\d+$")


def normalise_type(type_name: str) -> str:
    """``pkg/msg/Type`` or ``pkg/Type`` -> ``pkg/Type`` (the form used in ``MSG:`` lines)."""
    parts = type_name.strip().split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return f"{parts[0]}/{parts[2]}"
    if len(parts) == 2:
        return type_name.strip()
    raise ConfigError(f"message type {type_name!r}: expected pkg/msg/Type or pkg/Type")


def field_types(msg_text: str, package: str) -> list[str]:
    """The complex (non-primitive) types used by the fields of a ``.msg`` text, as ``pkg/Type``, in order.

    Constants (``TYPE NAME=VALUE``) and comments are skipped; ``Header`` means ``std_msgs/Header`` (ROS 1
    style) and an unqualified type lives in ``package``.
    """
    out: list[str] = []
    for raw in msg_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 2 or "=" in parts[1] or (len(parts) > 2 and parts[2].startswith("=")):
            continue  # a constant, or not a field line
        base = _BOUND.sub("", _ARRAY.sub("", parts[0]))
        if base in PRIMITIVES:
            continue
        if "/" in base:
            name = normalise_type(base)
        elif base == "Header":
            name = "std_msgs/Header"
        else:
            name = f"{package}/{base}"
        if name not in out:
            out.append(name)
    return out


def concatenated_definition(type_name: str, read_msg: Callable[[str], str]) -> str:
    """The ``ros2msg`` schema text of ``type_name``: its own definition, then every dependency (depth first,
    each once) after a separator and ``MSG: pkg/Type`` line. ``read_msg("pkg/Type")`` returns a ``.msg`` text."""
    root = normalise_type(type_name)
    seen = {root}
    order: list[str] = []
    texts: dict[str, str] = {}

    def visit(name: str) -> None:
        texts[name] = read_msg(name)
        for dep in field_types(texts[name], name.split("/")[0]):
            if dep not in seen:
                seen.add(dep)
                order.append(dep)
                visit(dep)

    visit(root)
    parts = [texts[root].rstrip("\n")]
    for dep in order:
        parts += [SEPARATOR, f"MSG: {dep}", texts[dep].rstrip("\n")]
    return "\n".join(parts) + "\n"


def msg_file_reader(prefixes: Iterable[str | Path]) -> Callable[[str], str]:
    """A ``read_msg`` that looks ``pkg/Type`` up as ``<prefix>/share/<pkg>/msg/<Type>.msg`` in ``prefixes``
    (the entries of ``AMENT_PREFIX_PATH``); ConfigError naming the paths tried when it is in none."""
    roots = [Path(p) for p in prefixes if str(p)]

    def read(name: str) -> str:
        pkg, typ = normalise_type(name).split("/")
        tried = []
        for root in roots:
            path = root / "share" / pkg / "msg" / f"{typ}.msg"
            if path.is_file():
                return path.read_text()
            tried.append(str(path))
        raise ConfigError(f"message definition {pkg}/{typ} not found; tried: {', '.join(tried) or 'no prefixes'}")

    return read
