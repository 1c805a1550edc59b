"""A discrete-event serving simulator driven by the step-time model, as Vidur and MLPerf's Server
scenario judge an engine: requests arrive, a scheduler like vLLM's batches them, and each step
takes what the model's ops take at that step's shapes.

Scheduler (continuous batching with chunked prefill, vLLM v1 / Sarathi style): every step holds
at most `prefill_budget` tokens and `max_batch` sequences. Running sequences first get one
decode token each, then prefills continue in chunks (oldest first), then waiting requests are
admitted while the budget and the KV cache allow. The KV cache is paged (`page` tokens a page)
and each sequence holds pages for its live context only; when a decode cannot get a page, the
most recently admitted sequence is preempted (its pages freed, recomputed later from its prompt
and the tokens it had produced), as vLLM does. A sequence's first token comes at the end of the
step that finishes its prefill.

Step time (`StepCost`): the step's token-proportional ops (GEMMs, norms, rotary, KV write, MLP
or MoE, all-reduces, the router's top-k) at its token count, the LM head at the sequences that
sample a token, decode attention at the decoding sequences' count and mean context, and each
prefill chunk's attention by its FLOPs (a causal chunk of c tokens after p cached ones) at the
time per FLOP of a fresh prompt of c tokens. Each is taken from the step model (measured,
interpolated, or roofline over an efficiency) on a grid of sizes and interpolated between.

Outputs: output tokens/s per GPU, TTFT and TPOT percentiles, batch occupancy over time.
`highest_rate` finds the highest Poisson arrival rate whose TTFT and TPOT percentiles meet an
SLO.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.measure.ops import get_op
from bench.measure.ops.step import OpUse
from bench.plan.models import Serving, part
from bench.plan.throughput import Step, StepModel, source_notes
from bench.record.units import fmt_target

PERCENTILES = (50, 90, 99)
# A new request is admitted only while this share of the KV pages stays free afterwards, so
# running sequences can grow without preemption at once (vLLM's watermark, 1%).
WATERMARK = 0.01


# --- workloads ----------------------------------------------------------------------------------


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
    sigma (µ = ln(mean) − σ²/2), rounded, at least 1."""
    rng = np.random.default_rng(seed)

    def draw(mean: float) -> np.ndarray:
        mu = math.log(mean) - sigma**2 / 2
        return np.maximum(1, np.rint(rng.lognormal(mu, sigma, n))).astype(int)

    return list(zip(draw(mean_in).tolist(), draw(mean_out).tolist(), strict=True))


def read_trace(path: Path) -> list[Request]:
    """A JSONL trace, one request a line: {"arrival": s, "input": n, "output": n} ("arrival"
    may be left out: 0, all at once)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise BenchError(f"{path}: cannot read the trace ({e.strerror})") from None
    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            request = Request(float(row.get("arrival", 0.0)), int(row["input"]), int(row["output"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise BenchError(
                f"{path}:{number}: expected a JSON object with integer 'input' and 'output' "
                "token counts and an optional 'arrival' in seconds"
            ) from None
        if request.prompt < 1 or request.output < 1 or not request.arrival >= 0:
            raise BenchError(
                f"{path}:{number}: input and output must be at least 1 and arrival at least 0"
            )
        requests.append(request)
    if not requests:
        raise BenchError(f"{path}: the trace holds no request")
    return sorted(requests, key=lambda r: r.arrival)


def arrivals(
    lengths: Sequence[tuple[int, int]], rate: float | None, seed: int = 0
) -> list[Request]:
    """Requests with the given lengths, all at t = 0 (rate None: offline) or arriving as a
    Poisson process of `rate` requests per second."""
    if rate is None:
        return [Request(0.0, i, o) for i, o in lengths]
    if not rate > 0:
        raise BenchError(f"--rate must be above 0 requests/s, got {rate}")
    rng = random.Random(seed)
    t, out = 0.0, []
    for i, o in lengths:
        t += rng.expovariate(rate)
        out.append(Request(t, i, o))
    return out


# --- step time ----------------------------------------------------------------------------------


def _grid(top: int, exact: Iterable[int] = ()) -> list[int]:
    """Sizes 1 .. top: powers of two and their halfway points, plus `exact` sizes (interpolation
    is exact there: a fixed workload's prompt, say)."""
    sizes = {1, top, *(e for e in exact if 1 <= e <= top)}
    p = 1
    while p < top:
        sizes.update((p, p + p // 2))
        p *= 2
    return sorted(s for s in sizes if s <= top)


class StepCost:
    """Seconds of one engine step on one GPU of the served model's TP group."""

    def __init__(self, step_model: StepModel, max_context: int, exact: Iterable[int] = ()) -> None:
        setup = step_model.setup
        self.setup, self.model = setup, step_model
        exact = list(exact)
        tokens = _grid(setup.prefill_budget + setup.max_batch, exact)
        self._tokens = np.array(tokens, dtype=float)
        self._linear = np.array([self._token_ops(t) for t in tokens])
        rows = _grid(setup.max_batch)
        self._rows = np.array(rows, dtype=float)
        self._head = np.array([self._seconds(self._head_uses(r)) for r in rows])
        contexts = _grid(max_context, exact)
        self._contexts = np.array(contexts, dtype=float)
        self._decode = np.array(
            [[self._seconds(_attention(setup.decode_step(b, c))) for c in contexts] for b in rows]
        )
        chunks = _grid(setup.prefill_budget, exact)
        self._chunks = np.array(chunks, dtype=float)
        self._per_flop = np.array([self._prefill_per_flop(c) for c in chunks])

    def _seconds(self, uses: list[OpUse]) -> float:
        step = Step("sim", 0, 0, 0, self.setup.tp)
        self.model.add_ops(step, uses)
        return step.seconds

    def _head_uses(self, rows: int) -> list[OpUse]:
        return [u for u in self.setup.decode_step(rows) if part(u) == "lm_head"]

    def _token_ops(self, tokens: int) -> float:
        """Every op whose work grows with the step's tokens (all but attention and the LM head:
        a decode step's at `tokens` sequences), and the kernels no op measures."""
        step = Step("sim", 0, 0, tokens, self.setup.tp)
        uses = self.setup.decode_step(tokens)
        self.model.add_ops(step, [u for u in uses if part(u) not in ("attention", "lm_head")])
        self.model.add_modelled(step)
        return step.seconds

    def _prefill_per_flop(self, chunk: int) -> float:
        uses = _attention(self.setup.prefill_step(1, chunk))
        return self._seconds(uses) / _flops(uses)

    def chunk_flops(self, chunk: int, past: int) -> float:
        """Attention FLOPs of a causal prefill chunk of `chunk` tokens after `past` cached ones,
        over all layers (windows included)."""
        return _flops(_attention(self.setup.chunk_step(chunk, past)))

    def __call__(self, tokens: int, sampled: int, decodes: int, mean_context: float,
                 chunks: Sequence[tuple[int, int]]) -> float:  # fmt: skip
        """A step of `tokens` tokens in all, `sampled` sequences sampling a token, `decodes`
        decoding sequences at `mean_context`, and prefill `chunks` (tokens, cached before)."""
        seconds = float(np.interp(tokens, self._tokens, self._linear))
        if sampled:
            seconds += float(np.interp(sampled, self._rows, self._head))
        if decodes:
            seconds += self._decode_seconds(decodes, mean_context)
        for chunk, past in chunks:
            per_flop = float(np.interp(chunk, self._chunks, self._per_flop))
            seconds += per_flop * self.chunk_flops(chunk, past)
        return seconds

    def _decode_seconds(self, batch: int, context: float) -> float:
        """Decode attention, bilinear in (batch, context) between grid points."""
        rows = self._rows
        if len(rows) == 1:  # a scheduler of one sequence
            return float(np.interp(context, self._contexts, self._decode[0]))
        hi = min(max(int(np.searchsorted(rows, batch)), 1), len(rows) - 1)
        lo = hi - 1
        at = [float(np.interp(context, self._contexts, self._decode[i])) for i in (lo, hi)]
        share = (batch - rows[lo]) / (rows[hi] - rows[lo])
        return at[0] + (at[1] - at[0]) * min(max(share, 0.0), 1.0)


def _attention(uses: list[OpUse]) -> list[OpUse]:
    return [u for u in uses if part(u) == "attention"]


def _flops(uses: list[OpUse]) -> float:
    return sum(get_op(u.op).flops(u.shape) * u.count for u in uses)


# --- the simulation -----------------------------------------------------------------------------


@dataclass(eq=False)  # each sequence is itself: identical requests are still two
class _Seq:
    request: Request
    target: int  # tokens to prefill: the prompt, or after preemption prompt + tokens produced
    cached: int = 0  # tokens in its KV cache
    produced: int = 0  # output tokens so far
    pages: int = 0
    running: bool = False
    decoding: bool = False  # its prefill is done
    first_token: float | None = None


@dataclass
class SimResult:
    """What a simulated run served, per GPU, and how fast each request was."""

    requests: int
    output_tokens: int
    seconds: float  # first arrival to last finish
    tp: int
    ttft: list[float]  # seconds, per request
    tpot: list[float]  # seconds per output token after the first, per request of 2+ tokens
    preemptions: int
    occupancy: list[tuple[float, int]] = field(default_factory=list)  # (time, running seqs)
    steps: int = 0

    @property
    def output_tokens_per_s(self) -> float:
        """Per GPU: a TP group of `tp` GPUs serves it."""
        return self.output_tokens / self.seconds / self.tp

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds / self.tp

    def percentile(self, metric: str, q: float) -> float:
        values = self.ttft if metric == "ttft" else self.tpot
        return float(np.percentile(values, q)) if values else 0.0

    @property
    def mean_occupancy(self) -> float:
        """Running sequences, averaged over time."""
        if len(self.occupancy) < 2:
            return float(self.occupancy[0][1]) if self.occupancy else 0.0
        times = [t for t, _ in self.occupancy]
        spans = np.diff(times)
        running = np.array([n for _, n in self.occupancy[:-1]], dtype=float)
        return float((running * spans).sum() / max(spans.sum(), 1e-12))


def simulate(requests: Sequence[Request], cost: StepCost, kv_pages: int) -> SimResult:
    """Serve `requests` (sorted by arrival) with the scheduler above; `kv_pages` pages of KV
    cache per GPU."""
    setup = cost.setup
    page = setup.page
    longest = max(r.prompt + r.output for r in requests)
    if -(-longest // page) > kv_pages:
        raise BenchError(
            f"a request of {longest} tokens needs {-(-longest // page)} KV pages of {page} "
            f"tokens but {kv_pages} fit beside the weights; shorten the requests or raise --tp"
        )
    engine = _Engine(cost, kv_pages)
    pending = deque(requests)
    while pending or engine.busy:
        while pending and pending[0].arrival <= engine.now:
            engine.waiting.append(_Seq(pending[0], pending[0].prompt))
            pending.popleft()
        if not engine.busy:
            engine.now = pending[0].arrival
            continue
        engine.step()
    e = engine
    return SimResult(
        len(requests), e.output_tokens, e.last_finish - requests[0].arrival, setup.tp, e.ttft,
        e.tpot, e.preemptions, e.occupancy, e.steps,
    )  # fmt: skip


class _Engine:
    """The scheduler's state: waiting and running sequences, free KV pages, the clock."""

    def __init__(self, cost: StepCost, kv_pages: int) -> None:
        self.cost, self.free = cost, kv_pages
        self.reserve = int(WATERMARK * kv_pages)
        self.page = cost.setup.page
        self.budget, self.cap = cost.setup.prefill_budget, cost.setup.max_batch
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []  # in admission order
        self.now, self.steps, self.preemptions = 0.0, 0, 0
        self.ttft: list[float] = []
        self.tpot: list[float] = []
        self.occupancy: list[tuple[float, int]] = []
        self.output_tokens, self.last_finish = 0, 0.0

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def _grow(self, seq: _Seq, tokens: int, reserve: int = 0) -> bool:
        """Pages for `tokens` more tokens of seq, leaving `reserve` free; False when the cache
        cannot hold them."""
        need = max(0, -(-(seq.cached + tokens) // self.page) - seq.pages)
        if need > self.free - reserve:
            return False
        self.free -= need
        seq.pages += need
        return True

    def _preempt(self, seq: _Seq) -> None:
        """Free its pages; it waits first in line to recompute its prompt and what it made."""
        self.running.remove(seq)
        self.free += seq.pages
        seq.pages, seq.cached, seq.running, seq.decoding = 0, 0, False, False
        seq.target = seq.request.prompt + seq.produced
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def step(self) -> None:
        # 1. a decode token for each sequence past its prefill, oldest first, preempting the
        # newest sequences while the cache is full (only a token starting a page needs one)
        page = self.page
        for seq in [s for s in self.running if s.decoding]:
            if seq.cached < seq.pages * page:
                continue
            while seq.running and not self._grow(seq, 1):
                self._preempt(self.running[-1])
        decoding = [s for s in self.running if s.decoding]
        tokens = len(decoding)
        planned: list[tuple[_Seq, int]] = []
        # 2. prefills under way continue, oldest first; 3. waiting requests are admitted
        for seq in [s for s in self.running if not s.decoding]:
            chunk = min(seq.target - seq.cached, self.budget - tokens)
            if chunk > 0 and self._grow(seq, chunk):
                planned.append((seq, chunk))
                tokens += chunk
        while self.waiting and len(self.running) < self.cap and tokens < self.budget:
            seq = self.waiting[0]
            chunk = min(seq.target - seq.cached, self.budget - tokens)
            if not self._grow(seq, chunk, self.reserve):
                break
            self.waiting.popleft()
            seq.running = True
            self.running.append(seq)
            planned.append((seq, chunk))
            tokens += chunk
        if tokens == 0:
            raise BenchError("the KV cache cannot hold one more token of any sequence")
        sampled = len(decoding) + sum(s.cached + c == s.target for s, c in planned)
        context = sum(s.cached for s in decoding) / len(decoding) + 1 if decoding else 0.0
        chunks = [(c, s.cached) for s, c in planned]
        self.now += self.cost(tokens, sampled, len(decoding), context, chunks)
        self.steps += 1
        self.occupancy.append((self.now, len(self.running)))
        # The step's results: a finished prefill samples a token, each decode makes one.
        done = []
        for seq, chunk in planned:
            seq.cached += chunk
            if seq.cached >= seq.target:
                seq.decoding = True
                seq.produced += 1
                if seq.first_token is None:
                    seq.first_token = self.now
                if seq.produced >= seq.request.output:
                    done.append(seq)
        for seq in decoding:
            seq.cached += 1
            seq.produced += 1
            if seq.produced >= seq.request.output:
                done.append(seq)
        for seq in done:
            self._finish(seq)

    def _finish(self, seq: _Seq) -> None:
        self.running.remove(seq)
        self.free += seq.pages
        r = seq.request
        self.ttft.append(seq.first_token - r.arrival)
        if r.output > 1:
            self.tpot.append((self.now - seq.first_token) / (r.output - 1))
        self.output_tokens += r.output
        self.last_finish = self.now


# --- under an SLO -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slo:
    """Latency targets, each at a percentile of the requests."""

    ttft: float | None  # seconds
    tpot: float | None  # seconds per output token
    percentile: float = 99.0

    def met(self, result: SimResult) -> bool:
        return all(
            limit is None or result.percentile(metric, self.percentile) <= limit
            for metric, limit in (("ttft", self.ttft), ("tpot", self.tpot))
        )

    def describe(self) -> str:
        limits = (("TTFT", self.ttft), ("TPOT", self.tpot))
        parts = [f"{m} ≤ {fmt_target(v)}" for m, v in limits if v]
        return f"p{self.percentile:g} " + " and ".join(parts)


_DURATION = {"ms": 1e-3, "s": 1.0, "us": 1e-6, "µs": 1e-6}


def parse_slo(text: str, percentile: float = 99.0) -> Slo:
    """'ttft=2s,tpot=200ms' -> Slo(2.0, 0.2)."""
    limits: dict[str, float] = {}
    for pair in text.split(","):
        key, _, value = (p.strip() for p in pair.partition("="))
        number = value.rstrip("msuµ")
        try:
            seconds = float(number) * _DURATION[value[len(number) :]]
        except (ValueError, KeyError):
            seconds = -1.0
        if key not in ("ttft", "tpot") or key in limits or not 0 < seconds < math.inf:
            raise BenchError(
                f"bad --slo '{text}': expected ttft=DURATION and/or tpot=DURATION, each once "
                "and a positive number with a unit (s, ms, us), e.g. ttft=2s,tpot=200ms"
            )
        limits[key] = seconds
    if not 0 < percentile <= 100:
        raise BenchError(f"--percentile must be in (0, 100], got {percentile}")
    return Slo(limits.get("ttft"), limits.get("tpot"), percentile)


@dataclass(frozen=True)
class RateSearch:
    """The highest arrival rate meeting an SLO, the run at it, and the offline bound."""

    rate: float  # requests/s per TP group (0 when even a trickle misses the SLO)
    result: SimResult | None
    offline: SimResult
    tried: int


def highest_rate(
    lengths: Sequence[tuple[int, int]],
    cost: StepCost,
    kv_pages: int,
    slo: Slo,
    seed: int = 0,
    iterations: int = 12,
) -> RateSearch:
    """Bisect the Poisson arrival rate between 0 and the offline throughput for the highest
    rate whose run meets the SLO (MLPerf Server, Vidur-Search)."""
    offline = simulate(arrivals(lengths, None), cost, kv_pages)
    high = offline.requests / offline.seconds  # per TP group: no arrival rate beats offline
    low, best = 0.0, None
    for _ in range(iterations):
        rate = (low + high) / 2
        result = simulate(arrivals(lengths, rate, seed), cost, kv_pages)
        if slo.met(result):
            low, best = rate, result
        else:
            high = rate
    return RateSearch(low, best, offline, iterations)


def kv_pages(setup: Serving, memory: float) -> int:
    """Pages of KV cache one GPU holds beside its weights and workspace."""
    plan = setup.memory_plan(memory)
    per_page = plan.kv_per_token * setup.page
    return max(0, int(plan.kv_budget // per_page))


def grid_exact(lengths: Sequence[tuple[int, int]]) -> list[int]:
    """Sizes worth exact grid points: the prompt lengths of a workload with few of them."""
    prompts = sorted({i for i, _ in lengths})
    return prompts if len(prompts) <= 8 else []


def occupancy_series(result: SimResult, points: int = 10) -> list[tuple[float, int]]:
    """Running sequences at `points` evenly spaced times of the run."""
    if not result.occupancy:
        return []
    times = [t for t, _ in result.occupancy]
    end = times[-1]
    out = []
    for k in range(1, points + 1):
        t = end * k / points
        i = min(bisect.bisect_left(times, t), len(times) - 1)
        out.append((t, result.occupancy[i][1]))
    return out


# --- a whole simulation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Requests' lengths, and a trace's own arrival times when it has them."""

    name: str
    lengths: list[tuple[int, int]]
    trace: list[Request] | None = None

    def requests(self, rate: float | None, seed: int) -> list[Request]:
        """At the trace's own times unless a rate is given; else all at once (offline) or at
        Poisson arrivals of `rate` requests/s."""
        if rate is None and self.trace is not None:
            return self.trace
        return arrivals(self.lengths, rate, seed)


def workload(kind: str, n: int, isl: int, osl: int, sigma: float = 1.0, seed: int = 0) -> Workload:
    """'fixed' (isl, osl), 'lognormal' (means isl, osl, log-spread sigma) or a JSONL trace."""
    if n < 1:
        raise BenchError(f"--requests must be at least 1, got {n}")
    if kind == "fixed":
        return Workload(f"{n:,} requests of {isl} + {osl} tokens", fixed_lengths(n, isl, osl))
    if kind == "lognormal":
        if not 0 <= sigma < math.inf:
            raise BenchError(f"--sigma must be a finite number of at least 0, got {sigma}")
        lengths = lognormal_lengths(n, isl, osl, sigma, seed)
        name = f"{n:,} requests, lognormal lengths (means {isl} + {osl}, σ {sigma:g})"
        return Workload(name, lengths)
    path = Path(kind)
    if path.suffix != ".jsonl" and not path.exists():
        raise BenchError(f"unknown workload '{kind}'; use fixed, lognormal or a JSONL trace file")
    trace = read_trace(path)
    lengths = [(r.prompt, r.output) for r in trace]
    return Workload(f"{len(trace):,} requests of the trace {path.name}", lengths, trace)


@dataclass(frozen=True)
class Simulation:
    """A simulated serving run of one model replica (a TP group), and how it was set up."""

    step_model: StepModel
    workload: Workload
    rate: float | None  # requests/s arriving at the replica; None: all at once (or the trace's)
    result: SimResult
    kv_pages: int
    search: RateSearch | None = None
    slo: Slo | None = None


def run(
    step_model: StepModel,
    load: Workload,
    *,
    rate: float | None = None,
    slo: Slo | None = None,
    seed: int = 0,
) -> Simulation:
    """Simulate `load` on the step model's target; with an SLO, at the highest Poisson rate
    that meets it (an SLO that no rate meets is an error)."""
    setup = step_model.setup
    longest = max(i + o for i, o in load.lengths)
    cost = StepCost(step_model, longest, grid_exact(load.lengths))
    pages = kv_pages(setup, step_model.target.memory)
    if slo is None:
        result = simulate(load.requests(rate, seed), cost, pages)
        return Simulation(step_model, load, rate, result, pages)
    search = highest_rate(load.lengths, cost, pages, slo, seed)
    if search.result is None:
        raise BenchError(
            f"{setup.model.name} at TP {setup.tp} on {step_model.target.name} misses "
            f"{slo.describe()} at every arrival rate tried, down to a trickle of requests"
        )
    return Simulation(step_model, load, search.rate, search.result, pages, search, slo)


def figures(sim: Simulation) -> dict[str, object]:
    """The simulation's figures by name, as `simulate --json` prints them."""
    setup, r = sim.step_model.setup, sim.result
    out: dict[str, object] = {
        "model": setup.model.name,
        "gpu": sim.step_model.target.name,
        "tp": setup.tp,
        "precision": setup.precision,
        "kv_precision": setup.kv_dtype,
        "workload": sim.workload.name,
        "rate_requests_s": sim.rate,
        "output_tokens_s_per_gpu": r.output_tokens_per_s,
        "requests_s_per_gpu": r.requests_per_s,
        "mean_running": r.mean_occupancy,
        "preemptions": r.preemptions,
        "steps": r.steps,
        "seconds": r.seconds,
    }
    for metric in ("ttft", "tpot"):
        for q in PERCENTILES:
            out[f"{metric}_p{q}_s"] = r.percentile(metric, q)
    if sim.search is not None:
        out["slo"] = sim.slo.describe()
        out["offline_output_tokens_s_per_gpu"] = sim.search.offline.output_tokens_per_s
    out["notes"] = source_notes(sim.step_model)
    return out
