"""A discrete-event serving simulator driven by the step-time model, as Vidur and MLPerf's Server
scenario judge an engine: requests arrive, a scheduler like the engines' batches them, and each
step takes what the model's ops take at that step's shapes.

Scheduler (continuous batching with chunked prefill, vLLM v1 / Sarathi style): every step holds
at most `prefill_budget` tokens and `max_batch` sequences. Running sequences first get one
decode token each, then prefills continue in chunks (oldest first), then waiting requests are
admitted, first come first served, while the budget and the KV cache allow. Admission reserves
KV pages for the whole request, its prompt and every token it will decode (TensorRT-LLM's
default GUARANTEED_NO_EVICT capacity policy; SGLang reserves decode growth by its
new_token_ratio), so a running sequence never waits for a page and none is ever preempted, and
all at once (offline) the cache is as full as admission allows: no arrival process serves more.
A sequence's first token comes at the end of the step that finishes its prefill.

Step time (`StepCost`): the step's token-proportional ops (GEMMs, norms, rotary, KV write, MLP
or MoE, all-reduces, the router's top-k) at its token count, the LM head at the sequences that
sample a token, decode attention at the decoding sequences' count and mean context, and each
prefill chunk's attention by its FLOPs (a causal chunk of c tokens after p cached ones) at the
time per FLOP of a fresh prompt of c tokens. Each is taken from the step model (measured,
interpolated, or roofline over an efficiency) on a grid of sizes and interpolated between
(linearly beyond the grid's longest context).

Features (`Features`, bench.plan.speculative): speculative decoding puts k + 1 tokens per
decoding sequence through each step, adds the draft's passes, and gains every sequence the
expected accepted tokens; a prefix-cache hit rate starts each prompt with that share cached
(no prefill compute, its pages still reserved); prefilled requests (a disaggregated decode
pool, bench.plan.disagg) arrive with their prompt cached and first token made.

Steady state (`SimResult.window`): a run starts empty and ends draining. Its served rate is the
slope of the output tokens made between the end of the warm-up (the first request's arrival plus
the 90th percentile of the time requests spend admitted: a turn of the batch) and the last
admission, when the load stops; its latency percentiles count the requests admitted in that
window early enough that 99% of service times end inside it. A window shorter than two turns is
no steady state, and the figures then cover the whole run. An offline run (`offline`) feeds the
scheduler all at once or evenly, whichever serves more: the throughput ceiling.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from bench import BenchError
from bench.measure.ops import get_op
from bench.measure.ops.step import OpUse
from bench.plan.models import Serving, part
from bench.plan.speculative import Speculation, cached_prefix
from bench.plan.stats import evenly, interpolate, percentile, slope
from bench.plan.throughput import Step, StepModel
from bench.plan.workloads import Request, Workload, arrivals

PERCENTILES = (50, 90, 99)
# The warm-up ends this percentile of service times (admission to last token) after the first
# request arrives: the batch fills within about one service time (Little's law).
WARM_UP_PERCENTILE = 90
# Requests counted for latency are admitted at least this percentile of service times before
# the load stops, so that almost all of them are served under steady load.
DRAIN_PERCENTILE = 99
# A steady window spans at least this many service times (the 90th percentile of admission to
# last token): a shorter one holds too little of the run's turns of the batch to measure it
# (assumption).
STEADY_TURNS = 2
# Runs too short for a steady state (or, in an SLO search, for a decisive verdict) double, up to
# this multiple of their first length (assumption: a bound on time, one doubling; an SLO
# search's runs start at MLPerf's 600 s already).
GROWTH = 2
# An offline run's paces (beside all at once): even feeding at these multiples of the rate the
# all-at-once run serves (assumption: a coarse search from just above it to twice it).
PACES = (1.1, 1.25, 1.5, 2.0)
# Instants of the steady window the served rate's least-squares fit samples, evenly spaced:
# far more than the waves a run holds, so that the fit follows the curve.
SLOPE_POINTS = 4096


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


class _Curve:
    """y(x) piecewise linear through points: flat below the first, extended past the last along
    the last segment (decode attention grows linearly with the context). It remembers the
    segment it last found: a run's steps move little from one to the next."""

    __slots__ = ("hint", "xs", "ys")

    def __init__(self, xs: list[float], ys: list[float]) -> None:
        if len(xs) == 1:  # one point: flat
            xs, ys = [xs[0], xs[0] + 1], [ys[0], ys[0]]
        self.xs, self.ys, self.hint = xs, ys, 0

    def segment(self, x: float) -> tuple[int, float]:
        """The segment i (from xs[i] to xs[i + 1]) and x's share along it."""
        xs, i = self.xs, self.hint
        if not xs[i] <= x <= xs[i + 1]:
            i = self.hint = min(max(bisect.bisect_left(xs, x) - 1, 0), len(xs) - 2)
        return i, max((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0)

    def __call__(self, x: float) -> float:
        i, share = self.segment(x)
        return self.ys[i] + (self.ys[i + 1] - self.ys[i]) * share


@dataclass(frozen=True)
class Features:
    """What the engine does beside plain decoding (bench.plan.speculative): speculative
    decoding, a prefix-cache hit rate, and requests that arrive prefilled (a disaggregated
    decode pool: their prompt's KV cache and first token come from a prefill pool)."""

    spec: Speculation | None = None
    prefix_hit: float = 0.0
    prefilled: bool = False

    @property
    def width(self) -> int:
        """Tokens a decoding sequence puts through the model per step."""
        return self.spec.width if self.spec else 1

    @property
    def gain(self) -> float:
        """Tokens a decoding sequence gains per step, on average."""
        return self.spec.tokens_per_step if self.spec else 1.0

    def describe(self) -> list[str]:
        """The features in words, for a run's notes."""
        said = [self.spec.describe()] if self.spec else []
        if self.prefix_hit:
            said.append(
                f"prefix cache: {self.prefix_hit:.0%} of every prompt's tokens found cached "
                "(no prefill compute; their KV pages still held)"
            )
        return said


# The engine without any of them.
PLAIN = Features()


class StepCost:
    """Seconds of one engine step on one GPU of the served model's TP group."""

    def __init__(
        self, step_model: StepModel, max_context: int, exact: Iterable[int] = (),
        features: Features | None = None,
    ) -> None:  # fmt: skip
        setup = step_model.setup
        features = features or PLAIN
        self.setup, self.model, self.features = setup, step_model, features
        self._chunk_flops: dict[tuple[int, int], float] = {}
        exact = list(exact)
        widest = setup.max_batch * features.width
        tokens = _grid(setup.prefill_budget + widest, exact)
        self._linear = _Curve([float(t) for t in tokens], [self._token_ops(t) for t in tokens])
        rows = _grid(setup.max_batch)
        self._rows = _Curve([float(r) for r in rows], [float(r) for r in rows])
        heads = _grid(widest + setup.max_batch)
        self._head = _Curve([float(r) for r in heads], [self._seconds(self._head_uses(r))
                                                        for r in heads])  # fmt: skip
        contexts = _grid(max_context, exact)
        self._contexts = _Curve([float(c) for c in contexts], [float(c) for c in contexts])
        self._decode = [  # on the curves' points (a grid of one point is padded to two)
            [self._seconds(_attention(setup.decode_step(int(b), int(c))))
             for c in self._contexts.xs]
            for b in self._rows.xs
        ]  # fmt: skip
        chunks = _grid(setup.prefill_budget, exact)
        self._per_flop = _Curve(
            [float(c) for c in chunks], [self._prefill_per_flop(c) for c in chunks]
        )

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
        over all layers (windows included); kept, as runs meet the same chunks again."""
        key = (chunk, past)
        if key not in self._chunk_flops:
            self._chunk_flops[key] = _flops(_attention(self.setup.chunk_step(chunk, past)))
        return self._chunk_flops[key]

    def __call__(self, tokens: int, sampled: int, decodes: int, mean_context: float,
                 chunks: Sequence[tuple[int, int]]) -> float:  # fmt: skip
        """A step of `tokens` tokens in all, `sampled` sequences sampling a token, `decodes`
        decoding sequences at `mean_context`, and prefill `chunks` (tokens, cached before)."""
        seconds = self._linear(tokens)
        if sampled:
            seconds += self._head(sampled)
        if decodes:
            seconds += self._decode_seconds(decodes, mean_context)
        for chunk, past in chunks:
            seconds += self._per_flop(chunk) * self.chunk_flops(chunk, past)
        return seconds

    def draft(self, decodes: int) -> float:
        """The draft's seconds in a step of `decodes` decoding sequences: k passes of a head
        of `draft_layers` decoder layers and the LM head (0 without speculation)."""
        spec = self.features.spec
        if spec is None or not decodes:
            return 0.0
        layer = self._linear(decodes) * spec.draft_layers / self.setup.model.layers
        return spec.k * (layer + self._head(decodes))

    def _decode_seconds(self, batch: int, context: float) -> float:
        """Decode attention, bilinear in (batch, context) between grid points."""
        c, along = self._contexts.segment(context)
        r, share = self._rows.segment(batch)
        lo, hi = self._decode[r], self._decode[r + 1]
        low = lo[c] + (lo[c + 1] - lo[c]) * along
        high = hi[c] + (hi[c + 1] - hi[c]) * along
        return low + (high - low) * min(share, 1.0)


def _attention(uses: list[OpUse]) -> list[OpUse]:
    return [u for u in uses if part(u) == "attention"]


def _flops(uses: list[OpUse]) -> float:
    return sum(get_op(u.op).flops(u.shape) * u.count for u in uses)


# --- the simulation -----------------------------------------------------------------------------


@dataclass(eq=False)  # each sequence is itself: identical requests are still two
class _Seq:
    request: Request
    index: int  # its place in the run's requests, where its times are kept
    pages: int  # reserved at admission for the whole request
    cached: int = 0  # prompt tokens in its KV cache
    offset: float = 0.0  # decoding: its context less the gain times the step index
    excess: float = 0.0  # tokens its last step's mean gain makes beyond its output


@dataclass(frozen=True)
class Window:
    """The steady part of a run: from the end of the warm-up to the last admission."""

    start: float
    end: float
    steady: bool  # False: the run is too short for one; its figures cover the whole run


@dataclass
class SimResult:
    """What a simulated run served and how fast each request was: per request, when it was
    sent, admitted, given its first token and finished; per step, its end, the sequences
    running and the output tokens made so far."""

    tp: int
    output: list[int]  # tokens each request generated
    sent: list[float]  # seconds: arrival, or for a closed loop when its client sent it
    admitted: list[float]
    first: list[float]
    finish: list[float]
    times: list[float]  # the end of each step
    running: list[int]
    made: list[float]  # output tokens made by the end of each step
    mean_output: float = field(init=False)
    # Each metric's steady values, kept: an SLO search reads them several times a run.
    _values: dict[str, list[float]] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.mean_output = sum(self.output) / len(self.output)

    @property
    def requests(self) -> int:
        return len(self.output)

    @property
    def output_tokens(self) -> int:
        return sum(self.output)

    @property
    def steps(self) -> int:
        return len(self.times)

    @property
    def seconds(self) -> float:
        """First arrival to last finish."""
        return max(self.finish) - min(self.sent)

    @cached_property
    def service(self) -> list[float]:
        """Every request's service time (admission to last token), sorted: the warm-up and
        drain are percentiles of it."""
        return sorted(f - a for f, a in zip(self.finish, self.admitted, strict=True))

    @cached_property
    def window(self) -> Window:
        turn = percentile(self.service, WARM_UP_PERCENTILE, ordered=True)
        start = min(self.sent) + turn
        end = max(self.admitted)
        if end - start < STEADY_TURNS * turn:
            return Window(min(self.sent), max(self.finish), False)
        return Window(start, end, True)

    @cached_property
    def steady(self) -> list[bool]:
        """Which requests were served under steady load: admitted in the steady window early
        enough to be served in it (none in a run too short for a steady state)."""
        w = self.window
        if not w.steady:
            return [False] * self.requests
        last = w.end - percentile(self.service, DRAIN_PERCENTILE, ordered=True)
        return [w.start <= a <= last for a in self.admitted]

    @property
    def latency_steady(self) -> bool:
        """Whether the latency percentiles count steady requests only (else every request)."""
        return any(self.steady)

    @cached_property
    def output_tokens_per_s(self) -> float:
        """Output tokens/s per GPU (a TP group of `tp` GPUs serves it) in the steady window: the
        least-squares slope of the tokens made against time, which the waves of fixed-length
        requests (admitted, prefilled and finished together) do not bias as the tokens made
        between two instants would."""
        w = self.window
        t = evenly(w.start, w.end, SLOPE_POINTS)
        made = [interpolate(x, self.times, self.made, left=0.0) for x in t]
        return slope(t, made) / self.tp

    @property
    def requests_per_s(self) -> float:
        """Per GPU, at the steady output rate: output tokens/s over the mean output."""
        return self.output_tokens_per_s / self.mean_output

    def values(self, metric: str) -> list[float]:
        """TTFT or TPOT (seconds) of each steady request (of every request of a run with none),
        in request order; TPOT only of those with 2+ tokens, whose time per token after the
        first is defined. The list is kept: copy it before changing it."""
        if metric not in self._values:
            counted = self.steady if self.latency_steady else [True] * self.requests
            rows = zip(counted, self.sent, self.first, self.finish, self.output, strict=True)
            if metric == "ttft":
                found = [first - sent for keep, sent, first, _, _ in rows if keep]
            else:
                found = [(end - first) / (out - 1)
                         for keep, _, first, end, out in rows if keep and out > 1]  # fmt: skip
            self._values[metric] = found
        return self._values[metric]

    def percentile(self, metric: str, q: float) -> float:
        """The q-th percentile of `metric`, NaN where no request defines it."""
        return percentile(self.values(metric), q)

    @property
    def mean_occupancy(self) -> float:
        """Running sequences, averaged over the steady window's time."""
        w = self.window
        weighted = spans = 0.0
        before = min(self.sent)  # the first step runs from the first arrival
        for end, running in zip(self.times, self.running, strict=True):
            if w.start < end <= w.end:
                weighted += running * (end - before)
                spans += end - before
            before = end
        return weighted / max(spans, 1e-12)


def simulate(
    requests: Sequence[Request], cost: StepCost, kv_pages: int, concurrency: int | None = None
) -> SimResult:
    """Serve `requests` (sorted by arrival) with the scheduler above; `kv_pages` pages of KV
    cache per GPU; with `concurrency`, as a closed loop of that many clients that each send
    their next request when the last one ends (vllm bench serve --max-concurrency)."""
    setup = cost.setup
    longest = max(r.prompt + r.output for r in requests)
    if pages_for(setup, longest) > kv_pages:
        raise BenchError(
            f"a request of {longest:,} tokens needs {pages_for(setup, longest):,} KV pages of "
            f"{setup.page} tokens but {kv_pages:,} fit beside the weights; shorten the requests "
            "or raise --tp"
        )
    engine = _Engine(cost, kv_pages, len(requests))
    pending = deque(enumerate(requests))
    while pending or engine.busy:
        while pending and pending[0][1].arrival <= engine.now:
            if concurrency is not None and engine.in_flight >= concurrency:
                break
            index, request = pending.popleft()
            sent = request.arrival if concurrency is None else max(request.arrival, engine.now)
            engine.arrive(index, request, sent)
        if not engine.busy:
            engine.now = pending[0][1].arrival
            continue
        engine.step()
    return engine.result(requests)


class _Engine:
    """The scheduler's state: waiting, prefilling and decoding sequences, free KV pages, the
    clock, and what each request and step did.

    Every decoding sequence gains the same tokens a step (one, or speculation's mean), so they
    are kept as a count and the sum of their contexts less the gain times the step index; each
    ends at a known step (a heap)."""

    def __init__(self, cost: StepCost, kv_pages: int, n: int) -> None:
        self.cost, self.free, self.features = cost, kv_pages, cost.features
        self.budget, self.cap = cost.setup.prefill_budget, cost.setup.max_batch
        self.waiting: deque[_Seq] = deque()
        self.prefilling: list[_Seq] = []  # admitted, in admission order
        self.decoding, self.offsets = 0, 0
        self.ending: list[tuple[int, int, _Seq]] = []  # (last decode step, index, seq)
        self.now, self.index, self.made = 0.0, 0, 0.0
        self.times: list[float] = []
        self.running: list[int] = []
        self.tokens: list[float] = []  # output tokens made (a mean gain's: fractional)
        self.sent, self.admitted = [0.0] * n, [0.0] * n
        self.first, self.finish = [0.0] * n, [0.0] * n

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.decoding)

    @property
    def in_flight(self) -> int:
        return len(self.waiting) + len(self.prefilling) + self.decoding

    def arrive(self, index: int, request: Request, sent: float) -> None:
        pages = pages_for(self.cost.setup, request.prompt + request.output)
        f = self.features
        cached = request.prompt if f.prefilled else cached_prefix(request.prompt, f.prefix_hit)
        self.waiting.append(_Seq(request, index, pages, cached))
        self.sent[index] = sent

    def _plan(self) -> list[tuple[_Seq, int]]:
        """This step's prefill chunks: those under way, oldest first, then admissions while the
        budget, the cap and the pages allow."""
        tokens, planned = self.decoding * self.features.width, []
        for seq in self.prefilling:
            if tokens >= self.budget:
                return planned
            chunk = min(seq.request.prompt - seq.cached, self.budget - tokens)
            planned.append((seq, chunk))
            tokens += chunk
        # A prefilled request (a decode pool's) needs no prefill tokens: only a slot and pages.
        while self.waiting and (tokens < self.budget or self.features.prefilled):
            seq = self.waiting[0]
            if len(self.prefilling) + self.decoding >= self.cap or seq.pages > self.free:
                break
            self.waiting.popleft()
            self.free -= seq.pages
            self.admitted[seq.index] = self.now
            self.prefilling.append(seq)
            chunk = min(seq.request.prompt - seq.cached, max(self.budget - tokens, 0))
            planned.append((seq, chunk))
            tokens += chunk
        return planned

    def step(self) -> None:
        planned = self._plan()
        done = [seq for seq, chunk in planned if seq.cached + chunk == seq.request.prompt]
        # Prefilled requests' first token came with their KV cache: none is sampled here.
        sampled = len(done) if not self.features.prefilled else 0
        width, gain = self.features.width, self.features.gain
        tokens = self.decoding * width + sum(chunk for _, chunk in planned)
        context = self.offsets / self.decoding + gain * self.index if self.decoding else 0.0
        chunks = [(chunk, seq.cached) for seq, chunk in planned if chunk]
        self.now += self.cost(tokens, self.decoding * width + sampled, self.decoding, context,
                              chunks) + self.cost.draft(self.decoding)  # fmt: skip
        self.made += self.decoding * gain + sampled
        while self.ending and self.ending[0][0] == self.index:
            self._end(heapq.heappop(self.ending)[2])
        for seq, chunk in planned:
            seq.cached += chunk
        if done:
            self.prefilling = [s for s in self.prefilling if s.cached < s.request.prompt]
        for seq in done:
            self._started(seq, gain)
        self.index += 1
        self.times.append(self.now)
        self.running.append(len(self.prefilling) + self.decoding)
        self.tokens.append(self.made)

    def _started(self, seq: _Seq, gain: float) -> None:
        """A sequence whose prompt is cached: its first token is out (now, or for a prefilled
        one when it was sent) and it decodes from the next step on, its other output − 1 tokens
        in as many steps as the gain needs."""
        prefilled = self.features.prefilled
        self.first[seq.index] = self.sent[seq.index] if prefilled else self.now
        if seq.request.output == 1:
            self._end(seq, decoding=False)
            return
        rest = seq.request.output - 1
        steps = math.ceil(rest / gain - 1e-9)
        seq.excess = steps * gain - rest
        seq.offset = seq.request.prompt + 1 - gain * (self.index + 1)
        self.decoding += 1
        self.offsets += seq.offset
        heapq.heappush(self.ending, (self.index + steps, seq.index, seq))

    def _end(self, seq: _Seq, decoding: bool = True) -> None:
        if decoding:
            self.decoding -= 1
            self.offsets -= seq.offset
            self.made -= seq.excess
        self.free += seq.pages
        self.finish[seq.index] = self.now

    def result(self, requests: Sequence[Request]) -> SimResult:
        return SimResult(
            self.cost.setup.tp, [r.output for r in requests], self.sent, self.admitted,
            self.first, self.finish, self.times, self.running, self.tokens,
        )  # fmt: skip


@dataclass(frozen=True)
class Offline:
    """An offline run: the result, the pace it was fed at (None: all at once) and its
    requests (doubled from those asked for until a steady state shows)."""

    result: SimResult
    pace: float | None
    requests: int


def offline(load: Workload, requests: int, seed: int, cost: StepCost, kv_pages: int) -> Offline:
    """Every request queued from the start (MLPerf's Offline scenario, which leaves the feeding
    to the system under test), fed to the scheduler all at once or evenly at the pace that
    serves the most of PACES. Fed all at once, requests of one length are admitted, prefilled
    and finished in waves, and between waves decode runs alone, its weights read for a few
    tokens; fed evenly, every step mixes a prefill chunk into the decodes (Sarathi-Serve's
    piggybacking), which serves more where decode is memory-bound. So no arrival process
    serves more than the offline run. Runs too short for a steady state are doubled, up to
    GROWTH times."""
    n = requests
    lengths = load.lengths(n, seed)
    first = simulate(arrivals(lengths, None), cost, kv_pages)
    while not first.window.steady and 2 * n <= GROWTH * requests:
        n *= 2
        lengths = load.lengths(n, seed)
        first = simulate(arrivals(lengths, None), cost, kv_pages)
    best = Offline(first, None, n)
    for factor in PACES:
        pace = first.requests_per_s * first.tp * factor
        evenly = [Request(i / pace, prompt, output) for i, (prompt, output) in enumerate(lengths)]
        result = simulate(evenly, cost, kv_pages)
        if result.window.steady and result.output_tokens_per_s > best.result.output_tokens_per_s:
            best = Offline(result, pace, n)
    return best


def kv_pages(setup: Serving, memory: float, cuda: bool = True) -> int:
    """Pages of KV cache (`page` tokens of every layer each) one GPU (or with `cuda` false, a
    CPU) holds beside its weights and what the engine keeps."""
    plan = setup.memory_plan(memory, cuda)
    return max(0, int(plan.kv_budget // (setup.kv_bytes_per_token() * setup.page)))


def pages_for(setup: Serving, context: int) -> int:
    """Pages a sequence holds at `context` tokens: fewer than its tokens need in every layer
    where windowed layers keep only their window."""
    return math.ceil(setup.kv_tokens(context) / setup.page - 1e-9)


def grid_exact(lengths: Sequence[tuple[int, int]]) -> list[int]:
    """Sizes worth exact grid points: the prompt lengths of a workload with few of them."""
    prompts = sorted({i for i, _ in lengths})
    return prompts if len(prompts) <= 8 else []


def occupancy_series(result: SimResult, points: int = 10) -> list[tuple[float, int]]:
    """Running sequences at `points` evenly spaced times of the run."""
    times = result.times
    end = times[-1]
    out = []
    for k in range(1, points + 1):
        t = end * k / points
        i = min(bisect.bisect_left(times, t), len(times) - 1)
        out.append((t, result.running[i]))
    return out
