"""Device peaks: the GPU table by the names torch and NVML report, and the CPU matmul probe's cache."""

from __future__ import annotations

import pytest

from bench.core.peaks import Peak, cpu_probe_key, gpu_peak, utilisation


@pytest.mark.parametrize(
    ("name", "precision", "tflops", "row"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4, "H100 SXM"),
        ("NVIDIA H100 PCIe", "bf16", 756.0, "H100 PCIe"),
        ("NVIDIA H100 NVL", "bf16", 835.5, "H100 NVL"),
        ("NVIDIA H200", "bf16", 989.4, "H200 SXM"),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0, "A100"),
        ("NVIDIA A100-PCIE-40GB", "tf32", 156.0, "A100"),
        ("NVIDIA L4", "bf16", 121.0, "L4"),
        ("NVIDIA L40S", "bf16", 362.05, "L40S"),
        ("NVIDIA A10", "fp32", 31.2, "A10"),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2, "RTX 4090"),
        ("Tesla V100-SXM2-16GB", "fp16", 125.0, "V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "fp16", 112.0, "V100 PCIe"),
    ],
)
def test_gpu_names_find_their_dense_datasheet_peak(name, precision, tflops, row):
    peak = gpu_peak(name, precision)
    assert peak.flops_per_s == pytest.approx(tflops * 1e12)
    assert peak.source.startswith(f"table: {row} {precision} dense (NVIDIA ")


def test_gpus_without_a_figure_say_why():
    assert gpu_peak("Tesla V100-SXM2-16GB", "bf16") == Peak(
        None, "no bf16 peak in the table for V100 SXM2 (NVIDIA V100 datasheet (SXM2))"
    )
    # No NVIDIA datasheet for the A10G: not guessed from the A10's
    assert gpu_peak("NVIDIA A10G", "bf16").flops_per_s is None
    assert "no peak known for 'NVIDIA A10G'" in gpu_peak("NVIDIA A10G", "bf16").source


def test_utilisation_is_per_device():
    achieved, mfu = utilisation(4e8, 250.0, 1, Peak(2e11, "probe"))
    assert achieved == 1e11 and mfu == 0.5
    assert utilisation(4e8, 500.0, 2, Peak(None, "none")) == (1e11, None)


def test_the_probe_key_keeps_only_the_dtypes_flags():
    flags = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "sse2"}
    assert cpu_probe_key("EPYC", flags, 2, "fp32", "2.13.0")["flags"] == ["avx2", "avx512f", "fma"]
    assert cpu_probe_key("EPYC", flags, 2, "bf16", "2.13.0")["flags"] == [
        "amx_bf16",
        "avx512_bf16",
        "avx512f",
    ]


def test_the_cpu_probe_runs_once_per_key_then_reads_its_cache(tmp_path, monkeypatch):
    from bench.workers import peak_probe

    calls = []

    def fake_probe(dtype, threads):
        calls.append((dtype, threads))
        return {"flops_per_s": 1e11 * threads, "shape": [512, 576, 1536], "repeats": 5, "measured": 0}

    monkeypatch.setattr(peak_probe, "probe", fake_probe)
    first = peak_probe.cpu_peak("fp32", threads=1, folder=tmp_path)
    again = peak_probe.cpu_peak("fp32", threads=1, folder=tmp_path)
    assert first == again and len(calls) == 1  # the second call read the cache
    assert first.source.startswith("probe: 512x576x1536 fp32 1 threads, best of 5, cached ")
    assert first.source.endswith(".json") and str(tmp_path) in first.source
    peak_probe.cpu_peak("fp32", threads=2, folder=tmp_path)
    peak_probe.cpu_peak("bf16", threads=1, folder=tmp_path)
    assert len(calls) == 3  # threads and dtype are part of the key
    assert len(list(tmp_path.glob("cpu-*.json"))) == 3


def test_a_real_probe_measures_a_positive_rate(monkeypatch):
    import torch

    from bench.workers import peak_probe

    monkeypatch.setattr(peak_probe, "PROBE_SHAPES", ((64, 64, 64), (128, 128, 128)))
    monkeypatch.setattr(peak_probe, "REPEATS", 2)
    found = peak_probe.probe(torch.float32, 1)
    assert found["flops_per_s"] > 1e6 and tuple(found["shape"]) in peak_probe.PROBE_SHAPES
