"""WGS84 geodetic coordinates <-> a local East-North-Up (ENU) tangent plane.

Exact ECEF-based transforms (no flat-earth approximation), pure ``math`` so one conversion costs a few
microseconds. Constants: WGS84 (NIMA TR8350.2), a = 6378137 m, f = 1/298.257223563.
"""

from __future__ import annotations

import dataclasses
import math

WGS84_A_M = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)  # first eccentricity squared
WGS84_B_M = WGS84_A_M * (1.0 - WGS84_F)
_EP2 = (WGS84_A_M**2 - WGS84_B_M**2) / WGS84_B_M**2  # second eccentricity squared


def geodetic_to_ecef(lat_deg: float, lon_deg: float, alt_m: float) -> tuple[float, float, float]:
    """Latitude/longitude (degrees) and ellipsoidal altitude (m) -> ECEF x, y, z (m)."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    s_lat, c_lat = math.sin(lat), math.cos(lat)
    n_m = WGS84_A_M / math.sqrt(1.0 - WGS84_E2 * s_lat * s_lat)
    return (
        (n_m + alt_m) * c_lat * math.cos(lon),
        (n_m + alt_m) * c_lat * math.sin(lon),
        (n_m * (1.0 - WGS84_E2) + alt_m) * s_lat,
    )


def ecef_to_geodetic(x_m: float, y_m: float, z_m: float) -> tuple[float, float, float]:
    """ECEF (m) -> latitude, longitude (degrees), ellipsoidal altitude (m).

    Bowring's closed form followed by one refinement: sub-millimetre for any point near the Earth's surface.
    """
    lon = math.atan2(y_m, x_m)
    p = math.hypot(x_m, y_m)
    theta = math.atan2(z_m * WGS84_A_M, p * WGS84_B_M)
    st, ct = math.sin(theta), math.cos(theta)
    lat = math.atan2(z_m + _EP2 * WGS84_B_M * st**3, p - WGS84_E2 * WGS84_A_M * ct**3)
    for _ in range(2):
        s_lat = math.sin(lat)
        n_m = WGS84_A_M / math.sqrt(1.0 - WGS84_E2 * s_lat * s_lat)
        alt = p / math.cos(lat) - n_m if abs(lat) < math.radians(89.0) else z_m / s_lat - n_m * (1 - WGS84_E2)
        lat = math.atan2(z_m, p * (1.0 - WGS84_E2 * n_m / (n_m + alt)))
    s_lat = math.sin(lat)
    n_m = WGS84_A_M / math.sqrt(1.0 - WGS84_E2 * s_lat * s_lat)
    alt = p / math.cos(lat) - n_m if abs(lat) < math.radians(89.0) else z_m / s_lat - n_m * (1 - WGS84_E2)
    return math.degrees(lat), math.degrees(lon), alt


@dataclasses.dataclass(frozen=True)
class LocalFrame:
    """A local ENU frame whose origin (the datum) is a WGS84 point."""

    lat_deg: float
    lon_deg: float
    alt_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat_deg) and math.isfinite(self.lon_deg) and math.isfinite(self.alt_m)):
            raise ValueError("datum must be finite")
        if not (-90.0 <= self.lat_deg <= 90.0 and -180.0 <= self.lon_deg <= 180.0):
            raise ValueError(f"datum ({self.lat_deg}, {self.lon_deg}) out of range")
        lat, lon = math.radians(self.lat_deg), math.radians(self.lon_deg)
        object.__setattr__(self, "_sl", math.sin(lat))
        object.__setattr__(self, "_cl", math.cos(lat))
        object.__setattr__(self, "_so", math.sin(lon))
        object.__setattr__(self, "_co", math.cos(lon))
        object.__setattr__(self, "_origin", geodetic_to_ecef(self.lat_deg, self.lon_deg, self.alt_m))

    def to_enu(self, lat_deg: float, lon_deg: float, alt_m: float) -> tuple[float, float, float]:
        """WGS84 point -> east, north, up (m) in this frame."""
        x, y, z = geodetic_to_ecef(lat_deg, lon_deg, alt_m)
        ox, oy, oz = self._origin  # type: ignore[attr-defined]
        dx, dy, dz = x - ox, y - oy, z - oz
        sl, cl, so, co = self._sl, self._cl, self._so, self._co  # type: ignore[attr-defined]
        east = -so * dx + co * dy
        north = -sl * co * dx - sl * so * dy + cl * dz
        up = cl * co * dx + cl * so * dy + sl * dz
        return east, north, up

    def to_geodetic(self, east_m: float, north_m: float, up_m: float) -> tuple[float, float, float]:
        """East, north, up (m) in this frame -> latitude, longitude (degrees), ellipsoidal altitude (m)."""
        sl, cl, so, co = self._sl, self._cl, self._so, self._co  # type: ignore[attr-defined]
        ox, oy, oz = self._origin  # type: ignore[attr-defined]
        x = ox - so * east_m - sl * co * north_m + cl * co * up_m
        y = oy + co * east_m - sl * so * north_m + cl * so * up_m
        z = oz + cl * north_m + sl * up_m
        return ecef_to_geodetic(x, y, z)
