"""Result documents with controlled numbers, for the compare, plot and export tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench.measure.ops import get_op
from bench.record.hardware import SPECS, peak_tflops
from bench.record.results import write_atomic
from bench.record.schema import CaseResult, DeviceInfo, EstimateRecord, ResultDoc, Timing

H100 = DeviceInfo(
    kind="cuda",
    name="NVIDIA H100 80GB HBM3",
    memory_bytes=80 * 2**30,
    cores=132,
    compute_capability="9.0",
    l2_bytes=50 * 2**20,
)
CPU = DeviceInfo(kind="cpu", name="Test CPU", memory_bytes=16 * 2**30, cores=8)


def timing(median_ms: float, spread: float = 0.02, mode: str = "cuda-events") -> Timing:
    """A timing whose [p20, p80] is median ± spread/2 (relative)."""
    p20, p80 = median_ms * (1 - spread / 2), median_ms * (1 + spread / 2)
    return Timing(median_ms, p20, p80, 0.98 * p20, 1.05 * p80, median_ms, spread / 2, 100, mode)


def case(
    m: int,
    n: int,
    k: int,
    ms: float | None,
    *,
    impl: str = "torch",
    dtype: str = "bf16",
    spread: float = 0.02,
    status: str = "ok",
    interpreted: bool = False,
    spec: str | None = "h100-sxm",
) -> CaseResult:
    """A matmul case timed at ms (None: not timed), with its roofline figures filled in."""
    shape = {"M": m, "N": n, "K": k}
    op = get_op("matmul")
    record = CaseResult(
        op="matmul",
        impl=impl,
        dtype=dtype,
        shape=shape,
        status=status,
        flops=op.flops(shape),
        bytes=op.bytes(shape, dtype),
        rel_error=1e-3 if status == "ok" else None,
        interpreted=interpreted,
        error=None if status == "ok" else "not run here",
    )
    if ms is None:
        return record
    record.timing = timing(ms, spread, "interpreted" if interpreted else "cuda-events")
    record.tflops = record.flops / (ms / 1e3) / 1e12
    record.gbps = record.bytes / (ms / 1e3) / 1e9
    if spec and not interpreted:
        record.peak_fraction = record.tflops / peak_tflops(SPECS[spec], dtype)
        record.bandwidth_fraction = record.gbps / SPECS[spec].bandwidth_gbs
    return record


def estimate(
    gpu: str, spec: str | None, decode: float, *, projected: bool = False
) -> EstimateRecord:
    """A saved estimate for a small Llama at TP1 bf16, 1024 in / 256 out."""
    return EstimateRecord(
        model="llama-3.1-8b",
        gpu=gpu,
        spec=spec,
        projected=projected,
        tp=1,
        precision="bf16",
        isl=1024,
        osl=256,
        weights_bytes=16e9,
        kv_bytes_per_token=131072.0,
        memory_bytes=80e9,
        workspace_fraction=0.1,
        max_batch=256,
        prefill_tokens_per_s=5 * decode,
        decode_tokens_per_s=decode,
        requests_per_s=decode / 256,
    )


def doc(
    *cases: CaseResult,
    device: DeviceInfo = H100,
    spec: str | None = "h100-sxm",
    estimates: tuple[EstimateRecord, ...] = (),
    created: str = "2025-06-01T12:00:00+00:00",
) -> ResultDoc:
    return ResultDoc(
        device=device,
        software={"python": "3.12", "torch": "2.11"},
        command="tokbench run",
        suite="standard",
        created=created,
        complete=True,
        spec=spec,
        cases=list(cases),
        estimates=list(estimates),
    )


def write(directory: Path, name: str, document: ResultDoc) -> Path:
    path = directory / name
    write_atomic(path, document.to_json())
    return path


def write_json(directory: Path, name: str, document: ResultDoc, edit=None) -> Path:
    """Write document as JSON after edit(data) changes the dict; NaN and infinity are written
    the way Python's json writes them, for files the writer itself would refuse."""
    data = dataclasses.asdict(document)
    if edit is not None:
        edit(data)
    path = directory / name
    path.write_text(json.dumps(data, indent=1))
    return path
