"""``nowcast evaluate``: resampling, held-out checks and a small end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verification.evaluate import (
    EvaluateOptions,
    evaluate,
    perceptual_status,
    resample_linear,
    training_files,
)

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"


def test_resample_linear_interpolates_between_native_frames():
    times = np.datetime64("2019-06-10T00:00") + np.arange(8) * np.timedelta64(2, "m")
    values = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None] * 2.0, (8, 2, 2)).copy()
    values[3, 0, 0] = np.nan  # the 6-min frame: spoils the 5-min frame, not the 10-min one
    out, out_times = resample_linear(values, times, 5)
    assert out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[:, 1, 1], [0.0, 5.0, 10.0])
    assert np.isnan(out[1, 0, 0]) and out[2, 0, 0] == 10.0
    assert out_times[1] == np.datetime64("2019-06-10T00:05")


def test_resample_linear_is_subsampling_when_steps_divide():
    times = np.datetime64("2020-01-01T00:00") + np.arange(7) * np.timedelta64(5, "m")
    values = np.random.default_rng(0).random((7, 3, 3)).astype(np.float32)
    values[2] = np.nan
    out, _ = resample_linear(values, times, 10)
    np.testing.assert_array_equal(out, values[::2])


def test_training_files_come_from_the_manifest_windows():
    manifest = {"training": {"data": {"files": ["a.nc", "b.nc", "mrms.nc"], "windows_per_file": {
        "train": {"a.nc": 3}, "val": {"b.nc": 2, "c.nc": 0}}}}}
    assert training_files(manifest) == {"a.nc", "b.nc"}


def test_lpips_and_fvd_are_skipped_or_refused_clearly(tmp_path):
    assert perceptual_status("lpips", None).startswith("skipped")
    with pytest.raises(ValueError, match="no such file"):
        perceptual_status("fvd", tmp_path / "missing.pt")
    weights = tmp_path / "vgg.pth"
    weights.write_bytes(b"0")
    with pytest.raises(ValueError, match="not implemented"):
        perceptual_status("lpips", weights)


def event_values(frames: int = 16, size: int = 128) -> np.ndarray:
    """(frames, size, size) mm/h: a rain blob moving east one cell per 2-min frame, NaN strip."""
    t, y, x = np.mgrid[:frames, :size, :size].astype(np.float32)
    blob = 12.0 * np.exp(-((y - 60.0) ** 2 + (x - 45.0 - t) ** 2) / (2 * 16.0**2))
    values = np.where(blob >= 0.1, blob, 0.0).astype(np.float32)
    values[:, :6, :] = np.nan  # a no-data strip
    return values


def write_event(path: Path, *, frames: int = 16, size: int = 128) -> Path:
    """The moving blob at 2-min steps on a 0.04-degree grid (one 128 x 128 tile at 4 km)."""
    import xarray as xr

    values = event_values(frames, size)
    times = np.datetime64("2021-07-01T12:00") + np.arange(frames) * np.timedelta64(2, "m")
    ds = xr.Dataset({"rain_rate": (("time", "y", "x"), values)},
                    coords={"time": times, "y": np.arange(size), "x": np.arange(size)},
                    attrs={"time_step_minutes": 2, "grid_spacing_deg": 0.04})
    ds.to_netcdf(path, engine="netcdf4")
    return path


@pytest.mark.skipif(not CHECKPOINT.is_dir(), reason="needs checkpoints/default")
def test_refuses_events_the_checkpoint_was_trained_on(tmp_path):
    event = write_event(tmp_path / "knmi_20100826.nc", frames=4)
    with pytest.raises(ValueError, match="allow-training-data"):
        evaluate(EvaluateOptions(checkpoint=CHECKPOINT, events=(event,), out=tmp_path / "out"))


@pytest.mark.skipif(not CHECKPOINT.is_dir(), reason="needs checkpoints/default")
def test_evaluate_smoke_on_a_tiny_event(tmp_path):
    pytest.importorskip("pysteps")
    from cli.main import main

    event = write_event(tmp_path / "tiny.nc")
    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(CHECKPOINT), "--events", str(event), "--members", "2",
                 "--max-windows", "1", "--steps", "4", "--out", str(out)]) == 0
    result = json.loads((out / "scores.json").read_text())
    assert set(result["scores"]) == {"stldm", "stldm_first_estimate", "persistence", "extrapolation",
                                     "steps"}
    assert result["lead_minutes"] == [5, 10]  # 30 min of 2-min data: 5 inputs + 2 leads at 5 min
    assert result["lpips"].startswith("skipped") and result["fvd"].startswith("skipped")
    # persistence scored by hand: last input frame (20 min) against the 25- and 30-min frames
    five_min, _ = resample_linear(event_values(), np.arange(16) * np.timedelta64(2, "m"), 5)
    valid = np.isfinite(five_min[5:7])
    err = np.abs(five_min[4] - five_min[5:7])
    persistence = result["scores"]["persistence"]
    np.testing.assert_allclose(persistence["mae"], [err[i][valid[i]].mean() for i in range(2)], rtol=1e-5)
    assert persistence["crps"] == pytest.approx(persistence["mae"])
    # the blob moves east: advecting it beats keeping it in place
    one = [t["label"] for t in result["thresholds"]].index("1 mm/h")
    csi = {m: result["scores"][m]["csi"][0][one][-1] for m in ("persistence", "extrapolation")}
    assert 0 < csi["persistence"] < csi["extrapolation"] <= 1
    timing = result["timing"]
    assert timing["stldm_seconds_per_ensemble"] > 0 and timing["ratio_stldm_over_steps"] > 0
    report = (out / "report.md").read_text()
    assert "| steps |" in report and "ratio STLDM / STEPS" in report
    for name in ("scores_vs_lead.png", "reliability.png", "rank_histograms.png", "case.png"):
        assert (out / name).stat().st_size > 1000


def test_parse_methods_keeps_the_canonical_order_and_names_the_choices():
    from verification.evaluate import METHODS, parse_methods

    assert parse_methods("persistence, stldm") == ("stldm", "persistence")
    assert parse_methods(METHODS) == METHODS
    with pytest.raises(ValueError, match="extrapolation"):
        parse_methods("stldm,pysteps")
    with pytest.raises(ValueError, match="comma list"):
        parse_methods("")


@pytest.mark.skipif(not CHECKPOINT.is_dir(), reason="needs checkpoints/default")
def test_evaluate_methods_runs_and_scores_only_the_chosen_methods(tmp_path):
    from cli.main import main

    event = write_event(tmp_path / "tiny.nc")
    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(CHECKPOINT), "--events", str(event), "--members", "2",
                 "--max-windows", "1", "--steps", "2", "--methods", "persistence,stldm", "--no-plots",
                 "--out", str(out)]) == 0
    result = json.loads((out / "scores.json").read_text())
    assert set(result["scores"]) == {"stldm", "persistence"} and result["methods"] == ["stldm", "persistence"]
    timing = result["timing"]
    assert timing["stldm_seconds_per_ensemble"] > 0
    assert timing["steps_seconds_per_ensemble"] is None and timing["ratio_stldm_over_steps"] is None
    report = (out / "report.md").read_text()
    assert "| persistence |" in report and "| steps |" not in report
    with pytest.raises(SystemExit):
        main(["evaluate", "--events", str(event), "--methods", "stldm,nope"])
