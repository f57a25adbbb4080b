"""The physics-only fallback: no learned correction, always available."""

from __future__ import annotations

import numpy as np


class PhysicsBackend:
    """Returns a zero correction, so the estimate is the physics baseline."""

    name = "physics"
    model_id = "physics"

    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}

    def run(self, features: np.ndarray) -> np.ndarray:
        """Zeros [N]."""
        return np.zeros(len(features), dtype=np.float32)
