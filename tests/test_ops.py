"""Op definitions: FLOP and byte formulas by hand, every op's smoke cases through the gate, and
the registry's own rules."""

import ast
from pathlib import Path

import pytest
import torch

import kernels
from bench import BenchError
from bench.measure import device as dev
from bench.measure.ops import OPS, get_op
from bench.measure.ops.attention import attention_shape
from bench.measure.ops.base import PARTS, Op
from bench.measure.ops.step import EFFICIENCY_CLASSES
from bench.measure.runner import RunConfig, run_one
from bench.measure.suites import CaseSpec
from bench.measure.timing import TimerConfig
from bench.plan.models import MODELS, Serving

ROOT = Path(__file__).parent.parent


def test_matmul_formulas() -> None:
    op, shape = get_op("matmul"), {"M": 2, "N": 3, "K": 5}
    assert op.flops(shape) == 60
    assert op.bytes(shape, "bf16") == (10 + 15 + 6) * 2
    assert op.bytes(shape, "fp8") == 10 + 15 + 6 * 2  # fp8 in, bf16 out


def _attn(sq: int, skv: int, causal: bool, window: int = 0) -> dict:
    return attention_shape(2, 4, 2, sq, skv, 8, causal, window)


@pytest.mark.parametrize(
    ("sq", "skv", "causal", "pairs"),
    [
        (4, 4, False, 16),
        (4, 4, True, 1 + 2 + 3 + 4),  # lower triangle with the diagonal
        (2, 5, True, 4 + 5),  # a chunk after a 3-token prefix: bottom-right aligned
        (5, 2, True, 0 + 0 + 0 + 1 + 2),  # more queries than keys: early rows see nothing
    ],
)
def test_attention_flops_count_only_visible_pairs(sq, skv, causal, pairs) -> None:
    assert get_op("attention").flops(_attn(sq, skv, causal)) == 4 * 2 * 4 * pairs * 8


def test_a_window_counts_and_reads_only_its_keys() -> None:
    op = get_op("attention")
    # 6 queries over 6 keys, window 2: the first row sees 1 key, the others 2 each.
    assert op.flops(_attn(6, 6, True, window=2)) == 4 * 2 * 4 * (1 + 5 * 2) * 8
    # A chunk of 2 queries after 8 keys of prefix, window 3: keys 6..9 are read, 0..5 are not.
    assert op.bytes(_attn(2, 10, True, window=3), "fp16") == 2 * (2 * 2 * 8 * (4 * 2 + 2 * 4))
    assert op.flops(_attn(4, 4, True, window=100)) == op.flops(_attn(4, 4, True))


def test_rmsnorm_formulas() -> None:
    op, shape = get_op("rmsnorm"), {"tokens": 3, "hidden": 8}
    assert op.flops(shape) == 5 * 24
    assert op.bytes(shape, "bf16") == (4 * 24 + 8) * 2  # x, residual in; y, residual out; w


def test_attention_and_decode_bytes() -> None:
    assert get_op("attention").bytes(_attn(3, 5, False), "fp16") == 2 * (
        2 * 2 * 8 * (4 * 3 + 2 * 5)
    )
    op = get_op("decode")
    decode = op.complete({"B": 2, "H": 8, "Hkv": 2, "D": 4, "L": 33, "page": 16})
    cache = 2 * 2 * 2 * 33 * 4 * 2
    assert op.bytes(decode, "bf16") == cache + 2 * 2 * 8 * 4 * 2 + 4 * 2 * 3
    assert op.flops(decode) == 4 * 2 * 8 * 33 * 4
    # A window of 20 reads 20 tokens (2 pages' entries), an fp8 cache a byte each, sinks 4·H.
    windowed = {**decode, "window": 20, "fp8kv": True, "sinks": True}
    assert op.bytes(windowed, "bf16") == 2 * 2 * 2 * 20 * 4 + 2 * 2 * 8 * 4 * 2 + 4 * 2 * 2 + 32
    assert op.flops(windowed) == 4 * 2 * 8 * 20 * 4
    # The whole cache is still held: a window shrinks the traffic, not the footprint.
    whole = {**windowed, "window": 0, "fp8kv": False}
    assert op.footprint(windowed, "bf16") == op.footprint(whole, "bf16")


KERNEL_OPS = sorted(name for name, op in OPS.items() if op.part != "communication")


@pytest.mark.parametrize("op_name", KERNEL_OPS)
def test_smoke_cases_pass_the_gate(op_name: str) -> None:
    """Every implementation that runs here matches the reference on the op's smoke shapes
    (collectives need several ranks: tests/test_distributed.py runs them under torchrun)."""
    op, cpu = get_op(op_name), dev.detect()
    config = RunConfig(timer=TimerConfig(max_time_s=0.01, min_reps=1))
    statuses = []
    for shape in op.smoke:
        case = CaseSpec(op_name, shape, "fp16")
        gen = torch.Generator(device=dev.torch_device(cpu)).manual_seed(1)
        inputs = op.inputs(shape, "fp16", dev.torch_device(cpu), gen)
        ref = op.reference(inputs)
        for impl in op.impls:
            record = run_one(op, impl, case, inputs, ref, cpu, None, config)
            assert record.status != "failed", (impl.name, shape, record.error)
            statuses.append((impl.name, record.status))
    assert ("triton", "ok") in statuses and (op.baseline, "ok") in statuses


@pytest.mark.parametrize("op", OPS.values(), ids=str)
def test_every_op_is_complete(op: Op) -> None:
    """What the harness reads off every op: suites' shapes (for a run of 4 ranks) that pass its
    own rules, axes and dtypes among its keys, a known part, and a baseline among its
    implementations."""
    smoke, standard = op.suite_shapes("smoke", 4), op.suite_shapes("standard", 4)
    assert smoke and standard
    for shape in (*smoke, *standard):
        op.check_shape(shape)
        assert op.work(shape) > 0 and op.bytes(shape, op.dtypes[0]) > 0 and op.label(shape)
    assert {k for axis in op.axes for k in axis} <= set(op.key_names)
    assert op.part in PARTS
    assert op.efficiency in EFFICIENCY_CLASSES
    assert op.baseline in [i.name for i in op.impls]
    assert set(op.tolerance) >= set(op.dtypes)


def _model_steps() -> list[Serving]:
    """Every built-in model's prefill and decode steps, at TP 1 and 2 where it shards."""
    setups = [Serving(m, tp=tp) for m in MODELS.values() if not m.unsupported for tp in (1, 2)]
    return [
        *(s.step("prefill", 2, 64, 64) for s in setups),
        *(s.step("decode", 3, 1, 99) for s in setups),
    ]


@pytest.mark.parametrize("op", OPS.values(), ids=str)
def test_every_use_in_a_model_step_is_a_shape_the_op_takes(op: Op) -> None:
    """An op's uses in the built-in models' steps name a role, shapes its own rules accept
    (so the model suite can run them), and a positive count; an op that reads a step off a
    shape reads back the step it came from; weights only where a shape holds them."""
    for step in _model_steps():
        for use in op.step_uses(step):
            assert use.role.isidentifier() and use.op == op.name and use.count >= 1
            op.check_shape(use.shape)
            assert op.complete(use.shape) == use.shape
            assert op.weight_elements(use.shape) >= 0
            if (where := op.step_of(use.shape)) is not None:
                assert where == (step.phase, step.batch, step.seq, step.context)


def test_the_registry_holds_every_op_module() -> None:
    """Every module of the ops folder that assigns OP or OPS at its top level is registered:
    read from the files, not from the registry's own discovery."""
    declared = 0
    for path in (ROOT / "bench" / "measure" / "ops").glob("*.py"):
        tree = ast.parse(path.read_text())
        targets = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                   if isinstance(t, ast.Name)}  # fmt: skip
        declared += bool(targets & {"OP", "OPS"})
        module = f"bench.measure.ops.{path.stem}"
        assert not targets & {"OP", "OPS"} or any(
            type(op).__module__ == module for op in OPS.values()
        )
    assert declared >= 8 and len(OPS) >= declared


@pytest.mark.parametrize(
    ("op_name", "shape", "words"),
    [
        ("matmul", {"M": 0, "N": 4, "K": 4}, "M must be an integer >= 1"),
        ("matmul", {"M": 4, "N": 4}, "needs the keys M,N,K"),
        ("decode", {"B": 1, "H": 8, "Hkv": 2, "D": 288, "L": 9, "page": 16}, "D must be at most"),
        ("decode", {"B": 1, "H": 8, "Hkv": 2, "D": 64, "L": 9, "page": -1}, "page must be"),
        ("rmsnorm", {"tokens": 1, "hidden": 0}, "hidden must be an integer >= 1"),
        ("attention", _attn(9, 4, True), "causal attention needs Sq <= Skv"),
        ("attention", {**_attn(4, 4, False), "causal": 1}, "causal must be true or false"),
    ],
)
def test_bad_shapes_are_named(op_name: str, shape: dict, words: str) -> None:
    with pytest.raises(BenchError, match=words):
        get_op(op_name).check_shape(shape)


def test_triton_cases_are_skipped_where_the_interpreter_cannot_run(monkeypatch) -> None:
    """Triton 3.6's interpreter fails under numpy 2.4: its cases are skipped, saying why and
    what to install, while the torch baselines still run."""
    problem = kernels.interpreter_problem("3.6.0", "2.4.1")
    assert "install numpy<2.4" in problem
    assert kernels.interpreter_problem("3.6.0", "2.3.5") is None
    assert kernels.interpreter_problem("3.9.0", "2.4.1") is None
    if not kernels.interpreted():
        pytest.skip("on a GPU the kernels are compiled, not interpreted")
    monkeypatch.setattr(kernels, "interpreter_problem", lambda: problem)
    op, cpu = get_op("matmul"), dev.detect()
    shape = {"M": 8, "N": 8, "K": 8}
    assert op.impl("triton").unsupported(shape, "fp16", cpu) == problem
    assert op.impl("torch").unsupported(shape, "fp16", cpu) is None


def test_the_norm_kernel_skips_what_it_cannot_take_saying_why() -> None:
    """Rows wider than one block are summed block by block, so no hidden size is refused."""
    triton, cpu = get_op("rmsnorm").impl("triton"), dev.detect()
    assert triton.unsupported({"tokens": 1, "hidden": 70000}, "fp16", cpu) is None
    if kernels.interpreted():  # bf16 runs (no tl.dot); many rows are left to a GPU
        assert triton.unsupported({"tokens": 8, "hidden": 64}, "bf16", cpu) is None
        assert "tokens" in triton.unsupported({"tokens": 4096, "hidden": 64}, "fp16", cpu)
