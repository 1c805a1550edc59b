"""Disaggregated serving (DistServe, arXiv 2401.09670; Splitwise, arXiv 2311.18677; NVIDIA
Dynamo): prompts are prefilled on one pool of GPUs, their KV cache moves to a second pool that
decodes them, so neither phase's steps slow the other's.

DistServe's placement, as here: each pool's instance (a model replica at its own layout) is
simulated on its own phase, its highest rate meeting that phase's target found by the SLO
search (prefill: TTFT, less the KV transfer; decode: TPOT), or its offline ceiling without an
SLO; then the pools are sized, P prefill and D decode instances, so that the system's rate
min(P · r_prefill, D · r_decode) per GPU of P · g_prefill + D · g_decode is the highest.

- The prefill pool serves each request's prompt and its first token (output 1).
- The KV transfer: every prefill GPU sends its shard of the prompt's cache (KV bytes per token
  × prompt tokens) to the decode pool at once, over the NVLink domain when both pools fit in
  it, else over the scale-out network (bench.plan.network's fabric: its latency and
  bandwidth); the longest prompt's transfer is charged to every request's TTFT.
- The decode pool's requests arrive prefilled (their cache and first token in hand) as Poisson
  arrivals: the departures of many prefill instances merged and split again (Burke's theorem
  makes an M/M/c queue's departures Poisson; an assumption for these queues). TPOT counts from
  the first token's arrival there, its wait for a slot included.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from bench import BenchError
from bench.plan import scenarios
from bench.plan.models import Serving
from bench.plan.network import fabric
from bench.plan.planner import ServingOptions, TimeSources
from bench.plan.simulate import PLAIN, Features
from bench.plan.slo import Slo
from bench.plan.throughput import StepModel
from bench.plan.workloads import Request, Workload
from bench.record.hardware import GpuSpec

# The most instances of one pool the ratio search tries (assumption: past it the ratio's
# granularity gains under 1/16; a larger fleet repeats the unit found).
MAX_INSTANCES = 16


@dataclass(frozen=True)
class Pools:
    """Instances of the prefill and decode pools; None: searched."""

    prefill: int
    decode: int


def parse_pools(text: str) -> Pools | None:
    """'auto' -> None (searched); 'P:D' -> Pools(P, D)."""
    if text.strip().lower() == "auto":
        return None
    p, _, d = text.partition(":")
    try:
        pools = Pools(int(p), int(d))
    except ValueError:
        pools = Pools(0, 0)
    if not (1 <= pools.prefill <= MAX_INSTANCES and 1 <= pools.decode <= MAX_INSTANCES):
        raise BenchError(
            f"--pools takes auto or P:D, prefill and decode instances of 1 to {MAX_INSTANCES} "
            f"each (e.g. 1:3); got '{text}'"
        )
    return pools


@dataclass(frozen=True)
class Transfer:
    """The KV cache of the longest prompt moving from a prefill GPU to the decode pool."""

    seconds: float
    bytes_per_gpu: float
    fabric: str


def kv_transfer(setup: Serving, spec: GpuSpec, prompt: int, gpus: int) -> Transfer:
    """Seconds to move a `prompt`-token cache from each GPU of a prefill instance of `setup`
    (all at once, each its own shard; an attention-DP group's sequence lives on its own TP
    group) within a deployment of `gpus` GPUs."""
    size = setup.kv_bytes_per_token() * setup.kv_tokens(prompt)
    fab = fabric(spec, gpus)
    seconds = fab.latency_s + size / (fab.bus_gbs * 1e9)
    return Transfer(seconds, size, fab.name)


@dataclass(frozen=True)
class PrefillOnly(Workload):
    """A workload's requests as the prefill pool serves them: the prompt and one token."""

    def lengths(self, n: int, seed: int = 0) -> list[tuple[int, int]]:
        return [(prompt, 1) for prompt, _ in super().lengths(n, seed)]

    def requests(self, n: int, rate: float | None, seed: int = 0) -> list[Request]:
        return [Request(r.arrival, r.prompt, 1) for r in super().requests(n, rate, seed)]


def prefill_only(load: Workload) -> PrefillOnly:
    return PrefillOnly(**{f.name: getattr(load, f.name) for f in dataclasses.fields(load)})


@dataclass(frozen=True)
class Disaggregated:
    """Both pools' runs, the transfer, and the pools sized."""

    prefill: scenarios.Simulation  # one prefill instance's run
    decode: scenarios.Simulation  # one decode instance's run
    transfer: Transfer
    pools: Pools
    searched: bool  # the pools were searched (else given)

    @property
    def rates(self) -> tuple[float, float]:
        """Requests/s one instance of each pool serves."""
        return instance_rate(self.prefill), instance_rate(self.decode)

    @property
    def gpus(self) -> int:
        p, d = self.pools.prefill, self.pools.decode
        return p * instance_gpus(self.prefill) + d * instance_gpus(self.decode)

    @property
    def requests_per_s(self) -> float:
        """The system's: the slower pool's."""
        rp, rd = self.rates
        return min(self.pools.prefill * rp, self.pools.decode * rd)

    @property
    def output_tokens_per_s(self) -> float:
        """Per GPU, over both pools' GPUs."""
        return self.requests_per_s * self.decode.result.mean_output / self.gpus


def instance_gpus(sim: scenarios.Simulation) -> int:
    """GPUs of one instance: a copy of the model (its attention-DP groups of TP GPUs)."""
    return sim.step_model.setup.gpus


def instance_rate(sim: scenarios.Simulation) -> float:
    """Requests/s one instance of the run serves: its GPUs at the run's rate per GPU."""
    return sim.requests_per_s * instance_gpus(sim)


def size_pools(rp: float, rd: float, gp: int, gd: int, most: int = 0) -> Pools:
    """P prefill and D decode instances (rates rp, rd requests/s; gp, gd GPUs each) serving
    the most per GPU, each at most MAX_INSTANCES and together at most `most` GPUs (0: no cap);
    ties go to the fewer GPUs."""
    best, top = Pools(1, 1), -math.inf
    for p in range(1, MAX_INSTANCES + 1):
        for d in range(1, MAX_INSTANCES + 1):
            gpus = p * gp + d * gd
            if most and gpus > most:
                continue
            per_gpu = min(p * rp, d * rd) / gpus
            if per_gpu > top * (1 + 1e-12):
                best, top = Pools(p, d), per_gpu
    return best


def disaggregate(
    prefill: StepModel,
    decode: StepModel,
    load: Workload,
    pools: Pools | None = None,
    *,
    slo: Slo | None = None,
    requests: int | None = None,
    seed: int = 0,
    features: Features = PLAIN,
) -> Disaggregated:
    """Each pool's instance simulated on its phase (at its SLO target, else offline), the KV
    transfer between them, and the pools as given or sized (within the NVLink domain when one
    instance of each fits in it: the transfer then stays on NVLink)."""
    spec = prefill.target.spec
    if spec is None:
        raise BenchError("--pools needs a GPU of the spec table (--gpu): the KV transfer's fabric")
    gp, gd = prefill.setup.gpus, decode.setup.gpus
    unit = pools.prefill * gp + pools.decode * gd if pools else gp + gd
    longest = max(p for p, _ in load.lengths(requests or scenarios.REQUESTS[0], seed))
    transfer = kv_transfer(prefill.setup, spec, longest, unit)
    p_slo, d_slo = _phase_slos(slo, transfer)
    # The prefill pool decodes nothing; the decode pool computes no prompt.
    p_features = dataclasses.replace(features, spec=None)
    d_features = dataclasses.replace(features, prefix_hit=0.0, prefilled=True)
    p_run = scenarios.run(
        prefill, prefill_only(load), requests, slo=p_slo, seed=seed, features=p_features
    )
    d_run = scenarios.run(decode, load, requests, slo=d_slo, seed=seed, features=d_features)
    searched = pools is None
    if pools is None:
        most = spec.domain if gp + gd <= spec.domain else 0
        pools = size_pools(instance_rate(p_run), instance_rate(d_run), gp, gd, most)
    return Disaggregated(p_run, d_run, transfer, pools, searched)


def _phase_slos(slo: Slo | None, transfer: Transfer) -> tuple[Slo | None, Slo | None]:
    """The prefill pool's target (TTFT less the transfer) and the decode pool's (TPOT)."""
    if slo is None:
        return None, None
    prefill = None
    if slo.ttft is not None:
        if slo.ttft <= transfer.seconds:
            raise BenchError(
                f"the KV transfer alone takes {transfer.seconds * 1e3:.3g} ms over "
                f"{transfer.fabric}, beyond the TTFT target: no pool ratio meets it"
            )
        prefill = Slo(slo.ttft - transfer.seconds, None, slo.percentile)
    decode = Slo(None, slo.tpot, slo.percentile) if slo.tpot is not None else None
    return prefill, decode


def figures(d: Disaggregated) -> dict[str, object]:
    """Every figure by name (simulate --json), each pool's with the serving model it rests on."""
    rp, rd = d.rates
    out: dict[str, object] = {
        "model": d.decode.step_model.setup.model.name,
        "gpu": d.decode.step_model.target.name,
        "pools": f"{d.pools.prefill}:{d.pools.decode}",
        "pools_searched": d.searched,
        "gpus": d.gpus,
        "output_tokens_s_per_gpu": d.output_tokens_per_s,
        "requests_s": d.requests_per_s,
        "kv_transfer_s": d.transfer.seconds,
        "kv_transfer_bytes_per_gpu": d.transfer.bytes_per_gpu,
        "kv_transfer_fabric": d.transfer.fabric,
    }
    for name, sim, rate, count in (("prefill", d.prefill, rp, d.pools.prefill),
                                   ("decode", d.decode, rd, d.pools.decode)):  # fmt: skip
        metric = "ttft" if name == "prefill" else "tpot"
        # Offline, every request is queued from the start: its latencies say nothing.
        value = sim.result.percentile(metric, 99) if sim.slo else math.nan
        extra = d.transfer.seconds if name == "prefill" else 0.0
        out[name] = {
            "instances": count, "layout": sim.step_model.setup.layout,
            "requests_s_per_instance": rate,
            f"{metric}_p99_s": None if math.isnan(value) else value + extra,
            "serving_model": sim.serving_model + (f", {sim.slo.describe()}" if sim.slo else ""),
            "notes": list(sim.features.describe()),
        }  # fmt: skip
    return out


def planned(
    serving: ServingOptions,
    sources: TimeSources,
    load: Workload,
    pools: str,
    prefill_tp: str | None = None,
    *,
    slo: Slo | None = None,
    requests: int | None = None,
    seed: int = 0,
    features: Features = PLAIN,
) -> Disaggregated:
    """`simulate --pools`: the decode pool at --tp, the prefill pool at --prefill-tp (default
    the same), on `sources`' GPU, as disaggregate answers it."""
    if serving.auto or (prefill_tp or "").strip().lower() == "auto":
        raise BenchError("--pools takes one layout per pool: give --tp (and --prefill-tp) as N")
    if load.trace:  # its times are the prompts' arrivals, not the decode pool's
        raise BenchError("--pools simulates fixed or lognormal workloads, not a trace's times")
    prefill = dataclasses.replace(serving, tp=prefill_tp) if prefill_tp else serving
    p_model, d_model = (sources.step_model(o.at(o.degree()), serving.model)
                        for o in (prefill, serving))  # fmt: skip
    return disaggregate(p_model, d_model, load, parse_pools(pools), slo=slo, requests=requests,
                        seed=seed, features=features)  # fmt: skip


def describe(d: Disaggregated) -> str:
    """The pools as a plan's source line: sizes, each pool's serving model, the transfer."""
    rp, rd = d.rates
    p, dec = d.prefill, d.decode
    return (
        f"disaggregated: {d.pools.prefill} prefill ({p.step_model.setup.layout}, "
        f"{rp:.3g} requests/s each; {p.serving_model}) : {d.pools.decode} decode ("
        f"{dec.step_model.setup.layout}, {rd:.3g} requests/s each; {dec.serving_model}) instances "
        f"{'sized for the most per GPU' if d.searched else 'as given'}, the slower pool's rate "
        f"over all {d.gpus} GPUs; KV transfer {d.transfer.seconds * 1e3:.3g} ms over "
        f"{d.transfer.fabric}"
    )
