"""Numbers as people read them: times, bytes, rates, ratios and counts.

One place for every formatter, used by the tables and by the one-line errors of every layer.
"""

from __future__ import annotations

import math


def fmt_ms(ms: float) -> str:
    """Three significant digits in µs, ms or s."""
    value, unit = ms * 1e3, "µs"
    for larger in ("ms", "s"):
        if float(f"{value:.3g}") < 1000:
            break
        value, unit = value / 1e3, larger
    return f"{value:#.3g} {unit}".replace(". ", " ")


def fmt_target(seconds: float) -> str:
    """A latency target as a user writes it, without fmt_ms's trailing zeros: 2 s, 200 ms,
    150 µs."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} µs"


def fmt_bytes(n: float) -> str:
    """GiB with a decimal, MiB whole; below 1 MiB, KiB or bytes (a collective's message)."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n:.0f} B"


def fmt_rate(x: float) -> str:
    """A rate: whole numbers with separators from 100 up, else 3 significant digits (so a slow
    CPU's 0.0123 requests/s does not print as 0)."""
    if x >= 100 or x == 0 or not math.isfinite(x):
        return f"{x:,.0f}"
    return f"{x:.3g}"


def fmt_big(n: float) -> str:
    """Large counts with a unit: 4.46 B, 278.64 M, 13.37 T."""
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return fmt_rate(n)


def fmt_power(megawatts: float) -> str:
    """Power: whole MW from 10 MW up, else 3 significant digits, in kW below 1 MW (a small
    fleet's 11.7 kW does not print as 0 MW)."""
    if megawatts >= 10:
        return f"{megawatts:,.0f} MW"
    return f"{megawatts:.3g} MW" if megawatts >= 1 else f"{megawatts * 1e3:.3g} kW"


def fmt_ratio(ratio: float) -> str:
    """1.234 -> "1.23×"; ratios too small or large for two decimals keep two figures."""
    return f"{ratio:.2f}×" if 0.01 <= ratio < 1000 else f"{ratio:.2g}×"


def fmt_slowdown(speedup: float) -> str:
    """0.9 -> "11.1% slower"; 0.1 -> "10.0× slower" (a percentage in the thousands reads badly)."""
    ratio = 1 / speedup
    return f"{ratio:.1f}× slower" if ratio >= 2 else f"{ratio - 1:.1%} slower"


def fmt_params(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.1f} M"


def plural(n: int, noun: str) -> str:
    """'1 case', '3 cases', '1,024 GPUs'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
