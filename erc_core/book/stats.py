"""Statistics for claims over a few seeds: paired tests, Holm's correction, bounded intervals, verdicts.

Usage::

    runs = study.per_run(table, "eval_acc", "last", 3)              # one number per (variant, seed)
    t = paired_test(runs, "dapo", "dapo_erc")                         # dapo_erc - dapo by seed: mean, 95% CI, p
    fam = family([dict(name="acc", **t), ...])                        # Holm over the family: p_holm, verdict
    gated = transformed_ci(shares, 0.0, 1.0)                          # an interval that stays inside [0, 1]

Rules, each in one place here:

- a comparison is **paired by seed** (runs of one seed share the warm start and first rollout): per-seed
  differences, their mean and 95% Student-t interval (:func:`erc_core.rl.study.paired_diff`) and the two-sided p-value
  of the same t statistic;
- a **family** of tests is corrected with Holm's step-down method; its size is reported with it;
- a verdict is ``"resolved: +"``, ``"resolved: -"`` or ``"not resolved"`` (never "no change": an interval that
  contains 0 says the seeds cannot tell, not that there is no effect);
- an interval of a non-negative or bounded quantity stays within its bounds: a t-interval on the log / logit
  scale, back-transformed (:func:`transformed_ci`), or a percentile bootstrap with a fixed seed
  (:func:`bootstrap_ci`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats as sps

from erc_core.rl.study import ci95, paired_diff

__all__ = ["VERDICTS", "t_pvalue", "paired_test", "one_sample_test", "holm", "family", "verdict", "bootstrap_ci",
           "transformed_ci", "binomial_ci"]

VERDICTS = ("resolved: +", "resolved: -", "not resolved")
ALPHA = 0.05


def _values(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[~np.isnan(x)]


def t_pvalue(mean: float, low: float, high: float, n: int) -> float:
    """Two-sided p-value of H0: true mean = 0, from a mean and its 95% t-interval over ``n`` values (the interval's
    half-width is ``t_{0.975, n-1} * se``). NaN when n < 2; 0 when the interval has zero width and mean != 0."""
    if n < 2 or any(math.isnan(v) for v in (mean, low, high)):
        return math.nan
    se = (high - low) / 2 / sps.t.ppf(0.975, n - 1)
    if se == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * sps.t.sf(abs(mean) / se, n - 1))


def paired_test(runs: pd.DataFrame, a: str, b: str) -> dict:
    """``b - a`` paired by seed over a :func:`erc_core.rl.study.per_run` table: ``n, mean, low, high`` (95% t-interval,
    as :func:`erc_core.rl.study.paired_diff`) and ``p`` (two-sided paired t-test)."""
    d = paired_diff(runs, a, b)
    return dict(d, p=t_pvalue(d["mean"], d["low"], d["high"], d["n"]))


def one_sample_test(values, reference: float = 0.0) -> dict:
    """``values - reference`` (one value per run): ``n, mean, low, high`` (95% t-interval) and ``p`` (two-sided)."""
    x = _values(values) - reference
    m, lo, hi = ci95(x)
    return dict(n=len(x), mean=m, low=lo, high=hi, p=t_pvalue(m, lo, hi, len(x)))


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction of a family of ``m`` p-values (NaNs are not tests and do not count in m).

    Sorted ascending, the k-th smallest (k = 1..m) gets ``min(1, max_{j <= k} (m - j + 1) p_(j))``; a test is
    rejected when its adjusted p-value is < ``alpha``. Controls the family-wise error rate at ``alpha`` under any
    dependence. Returns ``(adjusted, rejected)`` in the input order (NaN / False for NaN inputs).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    p = np.asarray(pvalues, dtype=float)
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)].tolist()}")
    adjusted = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        steps = p[order] * (m - np.arange(m))
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted, np.nan_to_num(adjusted, nan=1.0) < alpha


def verdict(mean: float, low: float, high: float, p_adjusted: float | None = None, alpha: float = ALPHA) -> str:
    """``"resolved: +"`` / ``"resolved: -"`` when the effect's sign is established, else ``"not resolved"``.

    Without ``p_adjusted``: resolved when the interval ``[low, high]`` excludes 0. With it (e.g. Holm's): resolved
    when ``p_adjusted < alpha`` and the interval excludes 0. The sign is that of ``mean``."""
    if any(v is None or math.isnan(v) for v in (mean, low, high)):
        return "not resolved"
    resolved = low > 0 or high < 0
    if p_adjusted is not None:
        resolved = resolved and not math.isnan(p_adjusted) and p_adjusted < alpha
    if not resolved:
        return "not resolved"
    return "resolved: +" if mean > 0 else "resolved: -"


def family(tests: list[dict], alpha: float = ALPHA) -> pd.DataFrame:
    """A family of tests (dicts with at least ``name, mean, low, high, p``) as a table with Holm-adjusted p-values
    (``p_holm``), ``verdict`` (from ``p_holm``) and ``family_size`` (the m of the correction) on every row."""
    if not tests:
        raise ValueError("tests is empty: a family needs at least one test")
    df = pd.DataFrame(tests)
    missing = {"name", "mean", "low", "high", "p"} - set(df.columns)
    if missing:
        raise ValueError(f"every test needs the keys {sorted(missing)}")
    df["p_holm"], _ = holm(df["p"].to_numpy(float), alpha)
    df["verdict"] = [verdict(r.mean, r.low, r.high, r.p_holm, alpha) for r in df.itertuples()]
    df["family_size"] = int(df["p"].notna().sum())
    return df


def bootstrap_ci(values, stat: Callable[[np.ndarray], float] = np.mean, level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float, float]:
    """``(stat(values), low, high)``: the percentile bootstrap interval of ``stat`` (``n_boot`` resamples drawn by
    ``numpy.random.default_rng(seed)``, so the interval is reproducible). For the mean (or any statistic that lies
    between the smallest and largest value) the interval stays within the values' range, hence within any bounds the
    quantity has. With few values (e.g. 3 seeds) it is too narrow: prefer :func:`transformed_ci` there."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    x = _values(values)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, len(x), size=(n_boot, len(x)))]
    boot = np.apply_along_axis(stat, 1, samples) if stat is not np.mean else samples.mean(axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    if stat is np.mean:  # the mean lies in [min, max]; clip the float rounding of a constant resample's mean
        lo, hi = np.clip([lo, hi], x.min(), x.max())
    return float(stat(x)), float(lo), float(hi)


def transformed_ci(values, low: float = 0.0, high: float = math.inf) -> tuple[float, float, float]:
    """A 95% t-interval for a quantity bounded to ``(low, high)``, computed on the log scale (``high = inf``:
    ``log(x - low)``) or the logit scale (``log((x - low) / (high - x))``) and mapped back, so it never leaves the
    bounds. Returns ``(centre, lo, hi)``, where the centre is the back-transformed mean of the transformed values (the
    geometric mean for ``(0, inf)``), not the arithmetic mean. Values on a bound have no finite transform: then the
    percentile bootstrap of the mean (:func:`bootstrap_ci`) is returned instead, which also respects the bounds."""
    if not low < high:
        raise ValueError(f"need low < high, got low={low!r}, high={high!r}")
    x = _values(values)
    if ((x < low) | (x > high)).any():
        raise ValueError(f"values must lie in [{low}, {high}], got {x[(x < low) | (x > high)].tolist()}")
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if ((x == low) | (x == high)).any():
        return bootstrap_ci(x)
    if math.isinf(high):
        fwd, back = (lambda v: np.log(v - low)), (lambda z: low + math.exp(z))
    else:
        fwd = lambda v: np.log((v - low) / (high - v))  # noqa: E731
        back = lambda z: low + (high - low) / (1 + math.exp(-z))  # noqa: E731
    m, lo, hi = ci95(fwd(x))
    if math.isnan(lo):
        return back(m), math.nan, math.nan
    return back(m), back(lo), back(hi)


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """A rate ``k / n`` with its exact (Clopper-Pearson) interval, which stays inside [0, 1]: ``(rate, low, high)``.
    E.g. the share of runs that collapsed; ``n = 0`` gives NaNs."""
    if not (isinstance(k, (int, np.integer)) and isinstance(n, (int, np.integer)) and 0 <= k <= n):
        raise ValueError(f"need integers 0 <= k <= n, got k={k!r}, n={n!r}")
    if n == 0:
        return math.nan, math.nan, math.nan
    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(sps.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(sps.beta.ppf(1 - a, k + 1, n - k))
    return k / n, low, high
