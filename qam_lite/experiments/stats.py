"""95 % intervals of a mean and of a difference of means, and how the tables write them.

Small samples (3 to 12 seeds) need Student's t, not 1.96: :func:`ci95` uses t(0.975, n - 1) and
:func:`difference` Welch's interval (unequal variances, Welch-Satterthwaite degrees of freedom
rounded down, so the interval errs wide). The t quantiles are a table of standard values: scipy
would give the same numbers, and is not worth a dependency for thirty of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Student's t quantile t(0.975, df) for df = 1..30 (standard table values); beyond, 1.96.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def ci95(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, half-width of the 95 % t interval)``; the half-width is None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n)


def t975(df: float) -> float:
    """t(0.975, df), df rounded down (conservative) to the table's values; 1.96 beyond 30."""
    df = int(math.floor(df))
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None]:
    """``(mean(a) - mean(b), half-width of its 95 % Welch interval)`` for two independent
    samples (e.g. two agents' per-seed success); the half-width is None when either sample has
    one value. The Welch-Satterthwaite degrees of freedom are rounded down (a wider interval)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    if na < 2 or nb < 2:
        return ma - mb, None
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    if va + vb == 0:
        return ma - mb, 0.0
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return ma - mb, t975(df) * math.sqrt(va + vb)


def fmt(mean: float, ci: float | None) -> str:
    """``"mean ± ci"`` with one decimal (``"mean"`` when there is no interval)."""
    return f"{mean:.1f}" if ci is None else f"{mean:.1f} ± {ci:.1f}"


def step_text(step: int) -> str:
    """50000 -> "50K", 1500000 -> "1.5M"."""
    if step >= 1_000_000 and step % 100_000 == 0:
        return f"{step / 1e6:g}M"
    return f"{step // 1000}K" if step % 1000 == 0 else str(step)
