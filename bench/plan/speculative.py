"""Speculative decoding (a draft head proposes k tokens, the model verifies them in one step)
and prefix caching, as the serving simulator (bench.plan.simulate) applies them.

Speculation: each decode step verifies k + 1 tokens per sequence (its last token and k drafts)
and keeps the longest accepted prefix plus the model's own next token. With a_i the chance
that draft i is accepted given drafts 1..i−1 were, a step makes on average

    1 + Σ_{i=1..k} Π_{j≤i} a_j tokens (Leviathan et al., arXiv 2211.17192, eq. 1 for equal a).

The simulator runs that expectation (every sequence gains the mean each step: no spread from
step to step, an assumption that leaves percentiles a little tight). A step costs the model's
step at k + 1 tokens per sequence (GEMMs, LM head) with decode attention reading each KV
cache once (the k + 1 queries stay under the ridge: the read dominates, an assumption) and the
draft: k passes of one decoder layer and the LM head at the decode batch, which is what an MTP
module (one transformer block and the shared head, run k times by TensorRT-LLM's "MTP Eagle")
and an EAGLE-3 draft head (one decoder layer) are.

Prefix caching: a share of every prompt's tokens is found in the cache (a shared system
prompt, an earlier turn): they skip prefill compute but still occupy their KV pages. For scale,
DeepSeek's service found 56.3% of its input tokens (342B of 608B in 24 hours) in its on-disk
KV cache (https://github.com/deepseek-ai/open-infra-index/blob/main/202502OpenSourceWeek/
day_6_one_more_thing_deepseekV3R1_inference_system_overview.md).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from bench import BenchError, check_range

# DeepSeek-V3/R1 MTP, chained (one MTP module run k times), acceptance lengths 1.92, 2.58 and
# 2.82 tokens per step for k = 1, 2, 3 on B200 (TensorRT-LLM, "DeepSeek R1 MTP Implementation
# and Optimization", Figure 7, https://nvidia.github.io/TensorRT-LLM/blogs/tech_blog/
# blog2_DeepSeek_R1_MTP_Implementation_and_Optimization.html; the figure is an image, read as
# the issue quotes it). Per position: a_1 = 0.92, a_2 = 0.66 / 0.92, a_3 = 0.24 / 0.66, the
# increments of those lengths. DeepSeek-V3's report gives 85–90% for the second token
# (arXiv 2412.19437, §5.4.3), about a_1.
MTP_LENGTHS = (1.92, 2.58, 2.82)
MTP_SOURCE = (
    "DeepSeek-R1 MTP acceptance lengths 1.92/2.58/2.82 for 1/2/3 drafts (TensorRT-LLM tech "
    "blog 2, Figure 7)"
)
# Models whose checkpoints carry MTP modules (config.json num_nextn_predict_layers ≥ 1).
MTP_MODELS = ("DeepSeek-V3", "DeepSeek-R1", "Kimi-K2")
# Draft passes cost one decoder layer (of the model's) each: MTP's and EAGLE-3's heads are one
# transformer block (DeepSeek-V3 report §2.2; EAGLE-3, arXiv 2503.01840, §3).
DRAFT_LAYERS = 1
# Longest draft taken (assumption: engines run 1–8; beyond it acceptance products vanish).
MAX_DRAFT = 16

_RULE = (
    "--spec takes mtp:K (K of 1..3: DeepSeek's MTP), eagle3:k=K,accept=A1,A2,.. or "
    "k=K,accept=A1,A2,.. (per-position acceptance in (0, 1], one per draft or one for all)"
)


@dataclass(frozen=True)
class Speculation:
    """Drafts per step, each position's acceptance given the earlier ones, and their source."""

    accept: tuple[float, ...]
    source: str
    draft_layers: int = DRAFT_LAYERS

    @property
    def k(self) -> int:
        return len(self.accept)

    @property
    def width(self) -> int:
        """Tokens each decoding sequence puts through the model per step."""
        return self.k + 1

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens a sequence gains per verification step: 1 + Σ_i Π_{j≤i} a_j."""
        return 1.0 + sum(math.prod(self.accept[: i + 1]) for i in range(self.k))

    def describe(self) -> str:
        rates = ", ".join(f"{a:.2f}" for a in self.accept)
        return (
            f"speculative decoding: {self.k} draft{'s' if self.k > 1 else ''} per step, "
            f"acceptance {rates} → {self.tokens_per_step:.2f} tokens per step ({self.source})"
        )


def mtp(k: int) -> Speculation:
    """DeepSeek's MTP with k chained drafts, per-position rates from MTP_LENGTHS."""
    if not 1 <= k <= len(MTP_LENGTHS):
        raise BenchError(f"mtp:{k}: published MTP acceptance covers 1 to {len(MTP_LENGTHS)}")
    gains = [MTP_LENGTHS[0] - 1] + [b - a for a, b in itertools.pairwise(MTP_LENGTHS)]
    accept = [gains[0]] + [gains[i] / gains[i - 1] for i in range(1, k)]
    return Speculation(tuple(accept[:k]), MTP_SOURCE)


def parse_spec(text: str, model: str = "") -> Speculation:
    """'mtp:3', 'eagle3:k=4,accept=0.8,0.7,0.6,0.5' or 'k=3,accept=0.8,0.6,0.4'."""
    kind, _, rest = text.strip().partition(":") if ":" in text else ("", "", text.strip())
    kind = kind.lower()
    if kind == "mtp":
        if model and not any(model.startswith(m) for m in MTP_MODELS):
            raise BenchError(f"--spec mtp: {model} has no MTP modules; use k=K,accept=...")
        return mtp(_int(rest))
    if kind not in ("", "eagle3"):
        raise BenchError(f"bad --spec '{text}': {_RULE}")
    fields = _fields(text, rest)
    if "accept" not in fields or "k" not in fields:
        raise BenchError(
            f"bad --spec '{text}': give k= and accept= (tokbench ships no EAGLE-3 acceptance "
            f"it has checked); {_RULE}"
        )
    k, rates = _int(fields["k"]), [_rate(v) for v in fields["accept"].split(",")]
    if len(rates) not in (1, k):
        raise BenchError(f"bad --spec '{text}': accept= needs 1 or {k} rates, got {len(rates)}")
    source = "EAGLE-3 draft head, acceptance given" if kind else "acceptance given"
    return Speculation(tuple(rates * k if len(rates) == 1 else rates), source)


def _fields(text: str, rest: str) -> dict[str, str]:
    """'k=3,accept=0.8,0.6' -> {'k': '3', 'accept': '0.8,0.6'}: a value runs to the next key."""
    fields: dict[str, str] = {}
    key = None
    for piece in rest.split(","):
        name, eq, value = piece.partition("=")
        if eq:
            key = name.strip().lower()
            if key not in ("k", "accept") or key in fields:
                raise BenchError(f"bad --spec '{text}': {_RULE}")
            fields[key] = value.strip()
        elif key == "accept":
            fields[key] += "," + piece.strip()
        else:
            raise BenchError(f"bad --spec '{text}': {_RULE}")
    return fields


def _int(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise BenchError(f"--spec: drafts must be a whole number, got '{text}'; {_RULE}") from None
    if not 1 <= k <= MAX_DRAFT:
        raise BenchError(f"--spec: drafts must be 1 to {MAX_DRAFT}, got {k}")
    return k


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise BenchError(f"--spec: acceptance must be a number in (0, 1], got '{text}'") from None
    check_range("--spec acceptance", rate, 0, 1, closed="high")
    return rate


def check_prefix_hit(share: float) -> float:
    """A prefix-cache hit rate: the share of prompt tokens found cached, in [0, 1)."""
    check_range("--prefix-hit", share, 0, 1, closed="low", what=" (share of prompt tokens)")
    return share


def cached_prefix(prompt: int, share: float) -> int:
    """Prompt tokens found in the cache at `share`: at least the last one is computed (it
    yields the first output token)."""
    return min(prompt - 1, math.floor(share * prompt))
