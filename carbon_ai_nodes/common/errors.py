"""The one exception tree of carbon_ai. Adapters translate library errors into it at their boundary."""

from __future__ import annotations

from typing import Any


class CarbonAIError(Exception):
    """Base of every error carbon_ai raises on purpose."""


class ConfigError(CarbonAIError, ValueError):
    """A configuration (parameter, profile, scenario file) is invalid; the message names the key and the fix."""


class ParameterError(ConfigError):
    """One parameter has a bad value: ``str()`` reads ``section.name=value: reason``."""

    def __init__(self, section: str, name: str, value: Any, reason: str) -> None:
        self.section = section
        self.name = name
        self.value = value
        self.reason = reason
        key = f"{section}.{name}" if section else name
        super().__init__(f"{key}={value!r}: {reason}")


class InputRejectedError(CarbonAIError):
    """An input message was refused (NaN, out of range, out of order, stale...). Counted, never fatal.

    ``reason`` is a short stable key used as the diagnostics counter name (e.g. ``"nan"``, ``"out_of_order"``).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ModelError(CarbonAIError):
    """An emission model could not be loaded or run (corrupt file, wrong inputs, backend failure)."""


class SolverError(CarbonAIError):
    """A planner or scheduler problem is malformed or the solver failed."""


class LinkError(CarbonAIError):
    """The uplink could not reach or authenticate with its broker."""


class PlantError(CarbonAIError):
    """The independent plant (FASTSim) could not score a trace: a bad vehicle file, an undrivable trace."""


class PlantUnavailableError(PlantError):
    """FASTSim, the validation dependency, is not installed here (``./setup.sh --no-validation``)."""
