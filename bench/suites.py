"""Named shape sweeps: which (op, shape, dtype) cases a suite runs.

`smoke` is sized for a CPU (the torch baselines on the CPU, the Triton kernels in the
interpreter) and is the default without a GPU; `standard` is the GPU sweep. `model` is derived
from a model config (bench.models): every shape one GPU runs for that model.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import BenchError
from bench.models import ModelConfig, suite_cases
from bench.ops import DTYPES, Op, Shape, get_op


@dataclass(frozen=True)
class CaseSpec:
    """One op at one shape and dtype; the runner expands it over the op's implementations."""

    op: str
    shape: Shape
    dtype: str


def _mm(m: int, n: int, k: int) -> Shape:
    return {"M": m, "N": n, "K": k}


# LLM-shaped GEMMs as N×K (weight) at token counts M: Llama-3-8B's MLP up/gate and down
# projections and its fused QKV projection.
LLM_NK = ((14336, 4096), (4096, 14336), (6144, 4096))
LLM_M = (1, 16, 64, 256, 1024, 4096, 8192)


def _attn(b: int, h: int, hkv: int, sq: int, skv: int, d: int, causal: bool) -> Shape:
    return {"B": b, "H": h, "Hkv": hkv, "Sq": sq, "Skv": skv, "D": d, "causal": causal}


def _decode(b: int, h: int, hkv: int, length: int, d: int = 128, page: int = 16) -> Shape:
    return {"B": b, "H": h, "Hkv": hkv, "D": d, "L": length, "page": page}


# Decode: batch × context pairs whose KV cache (one layer) stays within 2^20 tokens.
DECODE_BATCH_CONTEXT = [
    (b, ctx)
    for b in (1, 16, 64, 256)
    for ctx in (1024, 4096, 16384, 32768, 131072)
    if b * ctx <= 2**20
]

# Prefill as in FlashAttention's benchmarks: 16k tokens per batch, heads × head_dim = 2048.
PREFILL_TOKENS = 16384
PREFILL_SEQS = (512, 1024, 2048, 4096, 8192, 16384)

SHAPES: dict[str, dict[str, list[Shape]]] = {
    "smoke": {
        "matmul": [_mm(64, 64, 64), _mm(128, 128, 128), _mm(1, 256, 128), _mm(100, 72, 136)],
        "attention": [
            _attn(1, 4, 2, 128, 128, 64, causal=True),
            _attn(1, 4, 2, 128, 128, 64, causal=False),
            _attn(1, 4, 1, 48, 144, 64, causal=True),  # chunked prefill: a chunk after a prefix
        ],
        "decode": [
            _decode(3, 8, 2, 100, d=64),  # the last page of each sequence part-filled
            _decode(2, 4, 4, 37, d=64, page=0),
            _decode(4, 8, 1, 1, d=64),
        ],
    },
    "standard": {
        "matmul": [_mm(s, s, s) for s in (256, 512, 1024, 2048, 4096, 8192)]
        + [_mm(m, n, k) for n, k in LLM_NK for m in LLM_M],
        "attention": [
            _attn(PREFILL_TOKENS // s, 2048 // d, 2048 // d, s, s, d, causal)
            for d in (64, 128)
            for causal in (False, True)
            for s in PREFILL_SEQS
        ],
        "decode": [_decode(b, h, 8, ctx) for h in (32, 64) for b, ctx in DECODE_BATCH_CONTEXT]
        + [_decode(b, 32, 8, 4096, page=0) for b in (1, 64)],
    },
}

DEFAULT_DTYPES = {"smoke": ("fp32", "fp16", "bf16"), "standard": ("fp16", "bf16", "fp8")}


MODEL_SUITE = "model"


def suite_names() -> list[str]:
    return [*SHAPES, MODEL_SUITE]


def default_suite(has_gpu: bool) -> str:
    return "standard" if has_gpu else "smoke"


def build(
    suite: str,
    *,
    ops: list[str] | None = None,
    dtypes: list[str] | None = None,
    shapes: list[Shape] | None = None,
) -> list[CaseSpec]:
    """The cases of a suite, narrowed to ops and dtypes; each of `shapes` replaces the suite's
    shapes of the op whose shape keys it gives."""
    if suite == MODEL_SUITE:
        raise BenchError("suite 'model' is derived from a model: pass --model NAME or FILE")
    if suite not in SHAPES:
        raise BenchError(f"unknown suite '{suite}'; known: {', '.join(suite_names())}")
    for dtype in dtypes or ():
        if dtype not in DTYPES:
            raise BenchError(f"unknown dtype '{dtype}'; known: {', '.join(DTYPES)}")
    selected = ops or list(SHAPES[suite])
    given = _owned_shapes(shapes or [], [get_op(name) for name in selected])
    cases = []
    for name in selected:
        op = get_op(name)
        if shapes and name not in given:
            continue
        wanted = dtypes or DEFAULT_DTYPES[suite]
        for shape in given.get(name) or SHAPES[suite].get(name, []):
            op.check_shape(shape)
            cases += [CaseSpec(name, shape, dt) for dt in wanted if dt in op.dtypes]
    if not cases:
        raise BenchError(f"suite '{suite}' has no cases for ops {selected} and dtypes {dtypes}")
    return cases


def _owned_shapes(shapes: list[Shape], ops: list[Op]) -> dict[str, list[Shape]]:
    """Each given shape under the op whose keys it has; a shape no selected op takes is an
    error that lists every op's keys."""
    owned: dict[str, list[Shape]] = {}
    for shape in shapes:
        owner = next((op for op in ops if set(op.shape_keys) == set(shape)), None)
        if owner is None:
            keys = "; ".join(f"{op.name} {','.join(op.shape_keys)}" for op in ops)
            given = ",".join(shape)
            raise BenchError(f"shape keys {given} match no selected op; the keys are: {keys}")
        owned.setdefault(owner.name, []).append(shape)
    return owned


def model_cases(
    config: ModelConfig,
    *,
    tps: list[int],
    precision: str,
    batches: list[int],
    isls: list[int],
    osls: list[int],
    memory: float,
) -> list[CaseSpec]:
    """The `model` suite: every GEMM, prefill- and decode-attention shape one GPU runs for
    `config` at each TP degree, batch and input/output length (bench.models.suite_cases)."""
    unique: dict[tuple, CaseSpec] = {}
    for tp in tps:
        for isl in isls:
            for osl in osls:
                for op, shape, dtype in suite_cases(
                    config, tp, precision, batches, isl, osl, memory
                ):
                    unique[(op, tuple(sorted(shape.items())), dtype)] = CaseSpec(op, shape, dtype)
    return list(unique.values())


def parse_shape(text: str) -> Shape:
    """ "M=64,N=128,K=256" -> {"M": 64, "N": 128, "K": 256}; true/false become booleans."""
    shape: Shape = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"bad shape '{text}'; expected KEY=VALUE pairs like M=64,N=128,K=256")
        value = value.strip()
        if value.lower() in ("true", "false"):
            shape[key.strip()] = value.lower() == "true"
        elif value.lstrip("-").isdigit():
            shape[key.strip()] = int(value)
        else:
            shape[key.strip()] = value
    return shape
