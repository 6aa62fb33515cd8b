"""The benchmark commands run and report what they promise (``nowcast bench``, ``make bench-gpu``).

No timing is asserted: the figures are for people to read."""

from __future__ import annotations

import json

import pytest
import torch

from model.precision import bfloat16_supported
from verification import bench_gpu
from verification.bench import run_bench


def test_bench_gpu_dry_run_writes_every_figure_to_json(tmp_path):
    out = tmp_path / "bench_gpu.json"
    threads = torch.get_num_threads()
    bench_gpu.main(["--dry-run", "--out", str(out)])
    torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert report["dry_run"] is True
    assert {"device", "torch", "sizes", "peak_memory", "ensembles", "worker", "wall_seconds"} <= set(report)
    names = [f["name"] for f in report["ensembles"]]
    for preset in bench_gpu.PRESETS:
        assert f"{preset} float32" in names and f"{preset} bfloat16" in names
        assert f"{preset} bfloat16 + compile/CUDA graphs" in names
    assert [f["name"] for f in report["worker"]] == [
        f"worker small float32, {b} job(s) per batch" for b in bench_gpu.DRY_RUN.batches]
    for figure in report["ensembles"] + report["worker"]:
        assert figure["error"] is None, figure
        assert figure["seconds"] > 0 and figure["peak_memory_mb"] > 0
    assert all(f["jobs_per_second"] > 0 for f in report["worker"])


def test_bench_gpu_without_cuda_asks_for_a_gpu_or_the_dry_run(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--dry-run"):
        bench_gpu.run(dry_run=False, out=tmp_path / "x.json")


def test_nowcast_bench_reports_threads_and_the_steps_ratio():
    threads = torch.get_num_threads()
    try:
        lines = run_bench(presets=["small"], members=1, repeats=1, event=None, with_pysteps=True,
                          threads=1)
    finally:
        torch.set_num_threads(threads)
    text = "\n".join(lines)
    assert "1 CPU threads" in text and "small" in text
    if "not installed" not in text:
        assert "ratio small (float32)/pysteps on cpu:" in text
        if bfloat16_supported(torch.device("cpu")):  # the faster worker setting is timed too
            assert "ratio small (bfloat16)/pysteps on cpu:" in text


def test_nowcast_bench_times_the_paper_preset_in_bfloat16_composed():
    if not bfloat16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16 kernels")
    threads = torch.get_num_threads()
    try:
        lines = run_bench(presets=["paper"], members=1, repeats=1, event=None, with_pysteps=False,
                          threads=2, precisions=["bfloat16"])
    finally:
        torch.set_num_threads(threads)
    rows = [line.split() for line in lines if line.startswith("paper")]
    assert len(rows) == 1 and rows[0][1:3] == ["cpu", "bfloat16"]
    assert float(rows[0][3]) > 0 and "1 step + 19 denoiser calls" in lines[-1]


def test_nowcast_bench_refuses_zero_threads():
    with pytest.raises(ValueError, match="threads"):
        run_bench(presets=["small"], members=1, repeats=1, event=None, with_pysteps=False, threads=0)


def test_nowcast_bench_times_the_workers_nowcast_with_the_checkpoints_defaults():
    from pathlib import Path

    from model.checkpoint import read_manifest

    checkpoint = Path(__file__).resolve().parents[2] / "checkpoints" / "default"
    defaults = read_manifest(checkpoint)["nowcast"]
    threads = torch.get_num_threads()
    try:
        lines = run_bench(presets=[], members=2, repeats=1, event=None, with_pysteps=False, threads=1,
                          precisions=["float32"], checkpoint=checkpoint)
    finally:
        torch.set_num_threads(threads)
    rows = [line for line in lines if line.startswith("service")]
    assert len(rows) == 1 and rows[0].split()[1:3] == ["cpu", "float32"] and float(rows[0].split()[3]) > 0
    assert f"{defaults['steps']} DDIM steps" in rows[0] and f"advection {defaults['advection']}" in rows[0]
