"""Reading the files a user gives (scenarios, vehicle profiles, drive cycles, jobs, grid forecasts, instances).

Every failure is a one-line ConfigError naming the file: missing or unreadable, not UTF-8 text (binary
garbage), not valid YAML, a value that is not a number. YAML is read as YAML 1.2 reads numbers: PyYAML
follows YAML 1.1, where ``1e12`` (no dot) and ``1.0e12`` (unsigned exponent) are strings, so a profile's
``mass_kg: 1e12`` would be reported as "must be a number" instead of meeting its range check.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from pathlib import Path
from typing import Any

from carbon_ai_nodes.common.errors import ConfigError

# YAML 1.2 core schema floats in exponent form that YAML 1.1 leaves as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of the ``what`` file at ``path`` (e.g. what="drive cycle"); one-line ConfigError when it
    cannot be read or is not text."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not a text file (byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                          "is not UTF-8)") from None
    if "\x00" in text:
        raise ConfigError(f"{what} {path}: not a text file (NUL byte at offset {text.index(chr(0))})")
    return text


@functools.cache
def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2's exponent floats (its resolver table copied, SafeLoader's left alone)."""

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))
    return Loader


def load_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML of the ``what`` file at ``path`` (exponent floats such as 1e12 read as numbers)."""
    import yaml

    text = read_text(path, what)
    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not valid YAML ({' '.join(str(exc).split())})") from None


def read_csv(path: str | Path, what: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the ``what`` CSV at ``path``, which must have a header naming every one of ``columns``."""
    reader = csv.DictReader(io.StringIO(read_text(path, what), newline=""))
    try:
        found = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as exc:
        raise ConfigError(f"{what} {path}: not valid CSV ({exc})") from None
    missing = [c for c in columns if c not in found]
    if missing:
        raise ConfigError(f"{what} {path}: needs columns {','.join(columns)}; found {','.join(found) or 'none'}")
    return rows


def number(value: Any, where: str, default: float | None = None) -> float:
    """``value`` as a finite float (a YAML or CSV number, or its text); ConfigError ``where=value: must be a
    number`` otherwise. ``None`` gives ``default`` when one is given."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool):
        raise ConfigError(f"{where}={value!r}: must be a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}={value!r}: must be a number") from None
    if not math.isfinite(out):
        raise ConfigError(f"{where}={value!r}: must be a finite number")
    return out
