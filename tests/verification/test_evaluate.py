"""``nowcast evaluate``: resampling, held-out checks and a small end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.precision import bfloat16_supported
from radar.split import SplitRule
from verification.evaluate import EvaluateOptions, evaluate, perceptual_status, training_files


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


def event_values(frames: int, size: int = 64, speed: float = 1.0) -> np.ndarray:
    """(frames, size, size) mm/h: a rain blob moving east ``speed`` cells per frame, NaN strip."""
    t, y, x = np.mgrid[:frames, :size, :size].astype(np.float32)
    blob = 12.0 * np.exp(-((y - 30.0) ** 2 + (x - 20.0 - speed * t) ** 2) / (2 * 8.0**2))
    values = np.where(blob >= 0.1, blob, 0.0).astype(np.float32)
    values[:, :4, :] = np.nan  # a no-data strip
    return values


def write_event(path: Path, *, frames: int, step: int, speed: float = 1.0) -> Path:
    """The moving blob at ``step``-minute frames on a 4 km grid (one 64 x 64 tile)."""
    import xarray as xr

    values = event_values(frames, speed=speed)
    times = np.datetime64("2021-07-01T12:00") + np.arange(frames) * np.timedelta64(step, "m")
    ds = xr.Dataset({"rain_rate": (("time", "y", "x"), values)},
                    coords={"time": times, "y": np.arange(64) * 4000.0, "x": np.arange(64) * 4000.0},
                    attrs={"time_step_minutes": step, "grid_spacing_m_x": 4000.0, "grid_spacing_m_y": 4000.0})
    ds.to_netcdf(path, engine="netcdf4")
    return path


@pytest.fixture
def held_out_checkpoint(tmp_path, tiny_model):
    """A tiny checkpoint whose manifest records two networks' files and a split rule holding out
    the last 30 minutes of each (3 -> 4 frames of 64 x 64, steps 2, 5 and 6 minutes)."""
    files = [write_event(tmp_path / "aa_event.nc", frames=30, step=5),
             write_event(tmp_path / "bb_event.nc", frames=45, step=2, speed=0.5)]
    rule = SplitRule(val_fraction=0.0, test_minutes=30, test_region="", val_region="")
    training = {"config": {"cell_km": 4.0, "min_leads": 2, "min_coverage": 0.5, "advection": "bulk"},
                "data": {"files": [str(f) for f in files], "steps": [2, 5, 6], "split": rule.to_dict(),
                         "windows_per_file": {"train": {"aa_event.nc": 3, "bb_event.nc": 3}}}}
    return save_checkpoint(tiny_model, tmp_path / "ckpt", extra={"training": training,
                                                                 "nowcast": {"cell_km": 4.0}})


def test_evaluate_scores_the_held_out_windows_of_each_network_at_every_step_it_is_served_at(
    tmp_path, held_out_checkpoint
):
    pytest.importorskip("pysteps")
    from cli.main import main

    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(held_out_checkpoint), "--members", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    result = json.loads((out / "scores.json").read_text())
    # each network at every step it is served at: the 2-minute file at 2 and 6 minutes too
    assert set(result["groups"]) == {"aa @5 min", "bb @2 min", "bb @6 min"}
    six = result["groups"]["bb @6 min"]
    # every third 2-minute frame, from each 2-minute start: 3 inputs and 3 or 2 leads fit
    assert six["lead_minutes"] == [6, 12, 18, 24] and [w["leads"] for w in six["windows"]] == [3, 2, 2, 2]
    aa = result["groups"]["aa @5 min"]
    assert aa["lead_minutes"] == [5, 10, 15, 20]
    # the last 30 minutes (13:55 to 14:25) are held out: 3 inputs and 2 to 4 leads fit there
    assert [(w["start"], w["leads"]) for w in aa["windows"]] == [
        ("2021-07-01T13:55:00Z", 4), ("2021-07-01T14:00:00Z", 3), ("2021-07-01T14:05:00Z", 2)]
    assert set(aa["scores"]) == {"stldm", "stldm_first_estimate", "persistence", "extrapolation", "steps"}
    # persistence scored by hand on the first window: the last input frame against every lead
    values = event_values(30)
    start = (np.datetime64(aa["windows"][0]["start"].rstrip("Z")) - np.datetime64("2021-07-01T12:00"))
    first = int(start // np.timedelta64(5, "m"))
    x, truth = values[first : first + 3], values[first + 3 : first + 3 + aa["windows"][0]["leads"]]
    # the 4th lead exists in the first window only: its MAE is that window's
    err = np.nanmean(np.abs(np.nan_to_num(x[-1]) - truth[3]))
    np.testing.assert_allclose(aa["scores"]["persistence"]["mae"][3], err, rtol=1e-4)
    one = [t["label"] for t in result["thresholds"]].index("1 mm/h")
    csi = {m: aa["scores"][m]["csi"][0][one][0] for m in ("persistence", "extrapolation")}
    assert 0 < csi["persistence"] < csi["extrapolation"] <= 1  # the blob moves: advecting it wins
    summary = result["summary"]["aa @5 min"]
    assert set(summary) == set(aa["scores"]) and summary["stldm"]["crps_60"] is None  # no 60-min lead
    assert result["timing"]["ratio_stldm_over_steps"] > 0
    report = (out / "report.md").read_text()
    assert report.startswith("# Held-out verification") and "| bb @2 min | steps |" in report
    # a report names the format that produced it: "auto" (the worker's default) resolved
    native = "bfloat16" if bfloat16_supported(torch.device("cpu")) else "float32"
    assert f"; denoiser in {native}." in report
    for name in ("scores_vs_lead.png", "reliability.png", "rank_histograms.png"):
        assert (out / "aa_5min" / name).stat().st_size > 1000


def test_split_from_another_checkpoint_refuses_files_this_one_trained_on(tmp_path, held_out_checkpoint):
    from model.checkpoint import read_manifest

    other = tmp_path / "other"
    import shutil

    shutil.copytree(held_out_checkpoint, other)
    manifest = read_manifest(other)
    manifest["training"] = {"data": {"windows_per_file": {"train": {"aa_event.nc": 5}}}}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="allow-training-data"):
        evaluate(EvaluateOptions(checkpoint=other, split_from=held_out_checkpoint, out=tmp_path / "out"))
    with pytest.raises(ValueError, match="records no split rule"):
        evaluate(EvaluateOptions(checkpoint=other, out=tmp_path / "out"))


def test_parse_methods_keeps_the_canonical_order_and_names_the_choices():
    from verification.evaluate import METHODS, parse_methods

    assert parse_methods("persistence, stldm") == ("stldm", "persistence")
    assert parse_methods(METHODS) == METHODS
    with pytest.raises(ValueError, match="extrapolation"):
        parse_methods("stldm,pysteps")
    with pytest.raises(ValueError, match="comma list"):
        parse_methods("")


def test_evaluate_methods_runs_and_scores_only_the_chosen_methods(tmp_path, held_out_checkpoint):
    from cli.main import main

    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(held_out_checkpoint), "--members", "2", "--max-windows", "2",
                 "--steps", "2", "--methods", "persistence,stldm", "--no-plots", "--out", str(out)]) == 0
    result = json.loads((out / "scores.json").read_text())
    assert result["methods"] == ["stldm", "persistence"]
    for group in result["groups"].values():
        assert set(group["scores"]) == {"stldm", "persistence"}
    timing = result["timing"]
    assert timing["steps_seconds_per_ensemble"] is None and timing["stldm_seconds_per_ensemble"] > 0
