"""The ERC band: the one place that checks a band and says which tokens it keeps.

A token is kept when its entropy ratio ``rho_t = (H_t + 1e-8) / (H_old_t + 1e-8)`` lies strictly inside
``(low, high)``; it is gated when the entropy fell too far (``rho_t <= low``) or rose too far (``rho_t >= high``).
The paper's band is ``(0.95, 1.05)`` for both DAPO and GPPO (``PAPER_BAND``).

::

    band = Band.of((0.95, 1.05))        # a Band or a (low, high) pair, checked
    keep = band.keep(rho) & mask        # torch tensors, numpy arrays and pandas Series alike
    kind = band.kind(rho)               # 0 kept, 1 fell (rho <= low), 2 rose (rho >= high)
"""

from __future__ import annotations

from dataclasses import dataclass

from .checks import require

__all__ = ["Band", "PAPER_BAND", "check_band"]


def check_band(low: float, high: float, names: tuple[str, str] = ("low", "high")) -> None:
    """The rule of an ERC band's bounds: ``0 <= low < 1 < high`` (``high`` may be inf; NaN is neither).

    Raises :class:`~erc_core.checks.ParamError` naming the first bad bound as ``names`` call them (a config's
    ``("erc_low", "erc_high")``) and its allowed range."""
    lo, hi = names
    require(0.0 <= low < 1.0, lo, low, f"a number with 0 <= {lo} < 1")
    require(high > 1.0, hi, high, f"a number with {hi} > 1 (inf allowed)")


@dataclass(frozen=True)
class Band:
    """The open band ``(low, high)`` on the entropy ratio, ``0 <= low < 1 < high`` (``high`` may be inf).

    ``(0, inf)`` is the band that gates nothing (every token with a positive ratio is kept). Iterating gives
    ``low, high``, so a Band can stand where a ``(low, high)`` pair is expected.
    """

    low: float = 0.95
    high: float = 1.05

    def __post_init__(self):
        low, high = float(self.low), float(self.high)
        check_band(low, high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def of(cls, bounds: Band | tuple[float, float], name: str = "erc_bounds") -> Band:
        """``bounds`` as a Band: a Band, or a pair ``(low, high)``; errors name the argument ``name``."""
        if isinstance(bounds, Band):
            return bounds
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a pair (low, high), got {bounds!r}") from None
        try:
            return cls(low, high)
        except ValueError:
            raise ValueError(f"{name} must satisfy 0 <= low < 1 < high (high may be inf), got {bounds!r}") from None

    def __iter__(self):
        return iter((self.low, self.high))

    def keep(self, rho):
        """Kept: ``low < rho < high`` (strict), elementwise; same shape as ``rho``, boolean."""
        return (rho > self.low) & (rho < self.high)

    def fell(self, rho):
        """Gated because the entropy fell: ``rho <= low``, elementwise."""
        return rho <= self.low

    def rose(self, rho):
        """Gated because the entropy rose: ``rho >= high``, elementwise."""
        return rho >= self.high

    def gated(self, rho):
        """Gated: ``rho <= low or rho >= high``, elementwise (the complement of :meth:`keep`, NaN aside)."""
        return self.fell(rho) | self.rose(rho)

    def kind(self, rho):
        """0 kept, 1 gated because the entropy fell, 2 because it rose; integers, same shape as ``rho``."""
        return self.fell(rho) * 1 + self.rose(rho) * 2

    def __str__(self) -> str:
        return f"({self.low:g}, {self.high:g})"


#: The band of the paper's runs, for DAPO and GPPO alike; the official scripts set erc_low 0.95 and erc_high 1.05.
PAPER_BAND = Band(0.95, 1.05)
