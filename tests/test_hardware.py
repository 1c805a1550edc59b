"""bench.record.hardware: device-name matching, lookup errors and the dense peak figures."""

import pytest

from bench.record.hardware import (
    DTYPES,
    SPECS,
    GpuSpec,
    Projection,
    Roofline,
    get_spec,
    match_spec,
    peak_tflops,
    projection,
    roofline,
)


@pytest.mark.parametrize(
    ("device_name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm"),
        ("NVIDIA A100-SXM4-40GB", None),
        ("NVIDIA A100 80GB PCIe", None),
        ("NVIDIA B200", "b200"),
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA B300 SXM6 AC", "b300"),
        ("NVIDIA B300", "b300"),
        ("NVIDIA GB300", "gb300"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L40", None),
        ("NVIDIA L4", "l4"),
        ("AMD Instinct MI300X", "mi300x"),
        ("AMD Instinct MI300X VF", "mi300x"),
        ("Tesla T4", None),
        ("", None),
    ],
)
def test_match_spec(device_name: str, key: str | None) -> None:
    spec = match_spec(device_name)
    assert (spec.key if spec else None) == key


def test_match_spec_ignores_case_and_separators() -> None:
    assert match_spec("nvidia a100 sxm4 80gb") is SPECS["a100-sxm"]


@pytest.mark.parametrize("name", ["h100-sxm", "H100-SXM", "H100 SXM", "h100 sxm", " l4 "])
def test_get_spec_by_key_or_display_name(name: str) -> None:
    assert get_spec(name).key == name.strip().lower().replace(" ", "-")


def test_get_spec_unknown_lists_known_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown GPU 'v100'; known: a100-sxm, h100-sxm, "):
        get_spec("v100")


@pytest.mark.parametrize(("prefix", "key"), [("a100", "a100-sxm"), ("GB3", "gb300"), ("l4", "l4")])
def test_get_spec_takes_an_unambiguous_prefix(prefix: str, key: str) -> None:
    assert get_spec(prefix).key == key


def test_get_spec_ambiguous_prefix_names_the_candidates() -> None:
    wanted = r"GPU 'h100' is ambiguous; say which: h100-sxm, h100-pcie$"
    with pytest.raises(ValueError, match=wanted):
        get_spec("h100")


def test_specs_keyed_by_key_in_generation_order() -> None:
    assert list(SPECS) == [
        "a100-sxm",
        "h100-sxm",
        "h100-pcie",
        "h200",
        "b200",
        "gb200",
        "b300",
        "gb300",
        "l40s",
        "l4",
        "mi300x",
    ]
    assert all(key == spec.key for key, spec in SPECS.items())


def test_h100_sxm_dense_figures() -> None:
    spec = SPECS["h100-sxm"]
    assert spec.peak_tflops["bf16"] == 989.4
    assert spec.peak_tflops["fp8"] == 1978.9
    assert spec.bandwidth_gbs == 3350.0
    assert spec.memory_gb == 80.0


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_spec_is_consistent(spec: GpuSpec) -> None:
    assert spec.source.strip()
    assert spec.match and all(pattern == pattern.lower() for pattern in spec.match)
    assert set(spec.peak_tflops) <= set(DTYPES)
    assert {"bf16", "fp16", "tf32", "fp32"} <= set(spec.peak_tflops)
    assert all(value > 0 for value in spec.peak_tflops.values())
    assert spec.peak_tflops["tf32"] < spec.peak_tflops["bf16"]
    if "fp8" in spec.peak_tflops:
        assert spec.peak_tflops["fp8"] >= spec.peak_tflops["bf16"]
    if "fp4" in spec.peak_tflops:
        assert spec.peak_tflops["fp4"] >= spec.peak_tflops["fp8"]
    assert spec.bandwidth_gbs > 0
    assert spec.memory_gb > 0
    assert spec.interconnect_gbs > 0
    assert spec.power_w > 0


def test_each_spec_matches_its_own_patterns() -> None:
    for spec in SPECS.values():
        for pattern in spec.match:
            assert match_spec(f"NVIDIA {pattern}") is spec


def test_peak_tflops_fp32_with_and_without_tf32() -> None:
    spec = SPECS["h100-sxm"]
    assert peak_tflops(spec, "fp32") == 66.9
    assert peak_tflops(spec, "fp32", tf32=True) == 494.7
    assert peak_tflops(spec, "bf16", tf32=True) == 989.4


def test_peak_tflops_absent_and_unknown_dtype() -> None:
    assert peak_tflops(SPECS["a100-sxm"], "fp8") is None
    assert peak_tflops(SPECS["h100-sxm"], "fp4") is None
    assert peak_tflops(SPECS["b200"], "fp4") == 9000.0
    # A dtype of an op from a newer tokbench: no peak, so no roofline figures, never a crash.
    assert peak_tflops(SPECS["h100-sxm"], "int8") is None


def test_roofline_takes_the_longer_of_compute_and_memory() -> None:
    h100 = SPECS["h100-sxm"]
    compute = roofline(h100, "bf16", flops=989.4e12, nbytes=1e9)
    assert compute == Roofline(pytest.approx(1.0), "compute")
    memory = roofline(h100, "bf16", flops=1e9, nbytes=3350e9)
    assert memory == Roofline(pytest.approx(1.0), "memory")
    assert roofline(h100, "fp32", 494.7e12, 0, tf32=True).seconds == pytest.approx(1.0)
    assert roofline(SPECS["a100-sxm"], "fp8", 1, 1) is None


def test_projection_is_the_ratio_of_rooflines() -> None:
    """matmul 384×14336×4096 bf16 from H100 to L4: compute-bound on the H100, memory-bound on
    the L4, so the time scales by L4 memory time / H100 compute time (9.65×), not by the ratio
    of peaks (8.18×) nor of bandwidths (11.2×)."""
    m, n, k = 384, 14336, 4096
    flops, nbytes = 2 * m * n * k, 2 * (m * k + k * n + m * n)
    scale = projection(SPECS["h100-sxm"], SPECS["l4"], "bf16", flops, nbytes)
    expected = (nbytes / 300e9) / (flops / 989.4e12)
    assert scale == Projection(pytest.approx(expected), "memory")
    assert 9.6 < scale.scale < 9.7
    assert projection(SPECS["h100-sxm"], SPECS["a100-sxm"], "fp8", flops, nbytes) is None
