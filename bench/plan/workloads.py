"""The requests a simulated serving run replays: their lengths and when they arrive.

A workload is fixed lengths (every request --isl + --osl), lognormal lengths (those as means,
--sigma the spread of the logs) or a JSONL trace; it draws as many requests as a run asks for,
held to the model's context (a trace's longer request is an error naming its line; a longer
lognormal draw is clipped, and the workload says how many were). Requests arrive all at once
(offline), at Poisson times of a rate, or at a trace's own times.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, check_range
from bench.plan.models import ModelConfig, check_context
from bench.plan.texts import read_text

# The simulator's clock is a float64 of seconds. A run may span at most this long, so that one
# ulp of the clock (1.9 ns at 1e7 s) stays below 0.1% of the shortest kernel's time, the op-time
# model's 4.66 µs floor (docs/optime.md): a longer run would lose whole steps to rounding.
MAX_SPAN_S = 1e7
# Requests a run may start with: 100,000 take about 15 s on one core, so ten million, hours.
MAX_REQUESTS = 10**7
# The widest lognormal spread: at σ = 5 the median length is e^-12.5 of the mean, so nearly every
# draw rounds to one token and the mean rests on rare draws the context clips; wider spreads
# (and σ² overflowing at 1e154) describe no workload.
MAX_SIGMA = 5.0


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds from the start
    prompt: int  # input tokens
    output: int  # tokens to generate, at least 1


def fixed_lengths(n: int, isl: int, osl: int) -> list[tuple[int, int]]:
    """n requests of isl input and osl output tokens."""
    return [(isl, osl)] * n


def lognormal_lengths(
    n: int, mean_in: float, mean_out: float, sigma: float = 1.0, seed: int = 0
) -> list[tuple[int, int]]:
    """n (input, output) lengths, each lognormal with the given mean and log-space spread
    sigma (µ = ln(mean) − σ²/2), rounded (half to even), at least 1: all n inputs drawn
    first, then the outputs, from one generator seeded with `seed`."""
    rng = random.Random(seed)

    def draw(mean: float) -> list[int]:
        mu = math.log(mean) - sigma**2 / 2
        # e^(µ + σ·z), z standard normal: Python's gauss is its quickest normal draw.
        return [max(1, round(math.exp(rng.gauss(mu, sigma)))) for _ in range(n)]

    return list(zip(draw(mean_in), draw(mean_out), strict=True))


def clip_to(context: int, lengths: Sequence[tuple[int, int]]) -> tuple[list[tuple[int, int]], int]:
    """The lengths held to a context of `context` tokens (output first kept, at most all but
    one token; the prompt takes the rest), and how many were clipped; 0: no limit."""
    if not context:
        return list(lengths), 0
    out = []
    for prompt, output in lengths:
        output = min(output, context - 1)
        out.append((min(prompt, context - output), output))
    return out, sum(a != b for a, b in zip(out, lengths, strict=True))


def read_trace(path: Path, config: ModelConfig | None = None) -> list[Request]:
    """A JSONL trace, one request a line: {"arrival": s, "input": n, "output": n} ("arrival"
    may be left out: 0, all at once); each request within `config`'s context."""
    lines = read_text(path, "trace").splitlines()
    requests = [
        _trace_request(path, number, line, config)
        for number, line in enumerate(lines, 1)
        if line.strip()
    ]
    if not requests:
        raise BenchError(f"{path}: the trace holds no request")
    return sorted(requests, key=lambda r: r.arrival)


def _trace_request(path: Path, number: int, line: str, config: ModelConfig | None) -> Request:
    try:
        row = json.loads(line)
        request = Request(_seconds(row.get("arrival", 0.0)), _count(row["input"]),
                          _count(row["output"]))  # fmt: skip
    # ValueError covers bad JSON and integers too long to read; RecursionError, nesting too deep.
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, RecursionError):
        raise BenchError(
            f"{path}:{number}: expected a JSON object with integer 'input' and 'output' "
            "token counts and an optional 'arrival' in seconds"
        ) from None
    if request.prompt < 1 or request.output < 1 or not 0 <= request.arrival <= MAX_SPAN_S:
        raise BenchError(
            f"{path}:{number}: input and output must be at least 1 and arrival a number of "
            f"seconds from 0 to {MAX_SPAN_S:g} (the simulator's clock), got {line.strip()[:80]}"
        )
    if config is not None:
        what = f"{path}:{number}: input {request.prompt:,} + output {request.output:,}"
        check_context(config, request.prompt, request.output, what)
    return request


def _seconds(value: object) -> float:
    """A time in seconds: a number, never a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    return float(value)


def _count(value: object) -> int:
    """A token count: an integer (a float with no fraction is one), never a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(value)
    return int(value)


def arrivals(
    lengths: Sequence[tuple[int, int]], rate: float | None, seed: int = 0
) -> list[Request]:
    """Requests with the given lengths, all at t = 0 (rate None: offline) or arriving as a
    Poisson process of `rate` requests per second (within the clock's span)."""
    if rate is None:
        return [Request(0.0, i, o) for i, o in lengths]
    check_range("--rate", rate, what=" (requests/s)")
    if len(lengths) / rate > MAX_SPAN_S:
        raise BenchError(
            f"--rate {rate:g} spreads {len(lengths):,} requests over about "
            f"{len(lengths) / rate:.3g} s; a run may span at most {MAX_SPAN_S:g} s (the "
            "simulator's clock resolves its steps no further): raise --rate"
        )
    rng = random.Random(seed)
    t, out = 0.0, []
    for i, o in lengths:
        t += rng.expovariate(rate)
        out.append(Request(t, i, o))
    return out


@dataclass(frozen=True)
class Workload:
    """Requests' lengths, drawn as many at a time as a run asks for, and a trace's own arrival
    times when it has them."""

    kind: str  # "fixed", "lognormal" or "trace"
    isl: int  # fixed: every prompt; lognormal: the mean
    osl: int
    sigma: float = 0.0
    context: int = 0  # the model's: lognormal draws are clipped to it; 0: no limit
    trace: tuple[Request, ...] = ()
    source: str = ""  # the trace file's name
    notes: tuple[str, ...] = ()

    def lengths(self, n: int, seed: int = 0) -> list[tuple[int, int]]:
        """n requests' (input, output) lengths: a trace's cycled, lognormal ones drawn with
        `seed` and held to the context."""
        if self.kind == "fixed":
            return fixed_lengths(n, self.isl, self.osl)
        if self.kind == "lognormal":
            drawn = lognormal_lengths(n, self.isl, self.osl, self.sigma, seed)
            return clip_to(self.context, drawn)[0]
        return [(r.prompt, r.output) for r in itertools.islice(itertools.cycle(self.trace), n)]

    def requests(self, n: int, rate: float | None, seed: int = 0) -> list[Request]:
        """n requests: a trace's own at its own times unless a rate is given; else all at once
        (offline) or Poisson arrivals of `rate` requests/s."""
        if self.trace and rate is None:
            return list(self.trace)
        return arrivals(self.lengths(n, seed), rate, seed)

    def name(self, n: int) -> str:
        if self.kind == "fixed":
            return f"{n:,} requests of {self.isl} + {self.osl} tokens"
        if self.kind == "lognormal":
            return (
                f"{n:,} requests, lognormal lengths (means {self.isl} + {self.osl}, σ "
                f"{self.sigma:g})"
            )
        return f"{n:,} requests of the trace {self.source}"

    def mean_lengths(self) -> tuple[float, float]:
        """Mean (input, output) tokens of a request: the trace's, else the means asked for."""
        if self.trace:
            count = len(self.trace)
            return (sum(r.prompt for r in self.trace) / count,
                    sum(r.output for r in self.trace) / count)  # fmt: skip
        return float(self.isl), float(self.osl)


def workload(
    kind: str,
    n: int,
    isl: int,
    osl: int,
    *,
    sigma: float = 1.0,
    seed: int = 0,
    config: ModelConfig | None = None,
) -> Workload:
    """'fixed' (isl, osl), 'lognormal' (means isl, osl, log-spread sigma) or a JSONL trace,
    held to `config`'s context; `n` requests (not for a trace) drawn with `seed` for the note
    on clipped draws."""
    if not 1 <= n <= MAX_REQUESTS:
        raise BenchError(f"--requests must be from 1 to {MAX_REQUESTS:,}, got {n:,}")
    context = config.max_context if config else 0
    if kind == "fixed":
        if config is not None:
            check_context(config, isl, osl)
        return Workload("fixed", isl, osl, context=context)
    if kind == "lognormal":
        if not 0 <= sigma <= MAX_SIGMA:
            raise BenchError(
                f"--sigma must be a finite number of at least 0 and at most {MAX_SIGMA:g}, got "
                f"{sigma:g}"
            )
        clipped = clip_to(context, lognormal_lengths(n, isl, osl, sigma, seed))[1]
        notes = (
            (f"{clipped:,} of {n:,} lognormal draws were longer than the model's context of "
             f"{context:,} tokens: clipped to it",) if clipped else ()
        )  # fmt: skip
        return Workload("lognormal", isl, osl, sigma, context, notes=notes)
    path = Path(kind)
    if path.suffix != ".jsonl" and not path.exists():
        raise BenchError(f"unknown workload '{kind}'; use fixed, lognormal or a JSONL trace file")
    trace = tuple(read_trace(path, config))
    return Workload("trace", isl, osl, context=context, trace=trace, source=path.name)
