"""The shared real events: every network trains, and every network has held-out test windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.config import STLDMConfig
from training.data import build_splits

# /work/main/tests/training/test_real_events.py -> /work/shared/radar/events
EVENTS = Path(__file__).resolve().parents[3] / "shared" / "radar" / "events"


@pytest.mark.slow
@pytest.mark.skipif(not EVENTS.is_dir(), reason=f"real radar events not found at {EVENTS}")
def test_every_network_trains_and_has_held_out_windows(capsys) -> None:
    config = STLDMConfig.small()
    parts = build_splits(sorted(EVENTS.glob("*.nc")), t_in=config.t_in, t_out=config.t_out,
                         steps=config.step_minutes, size=64, stride=64, cell_km=4.0,
                         transform=config.transform, which=("train", "val", "test"))
    networks = {name: {f.split("_")[0] for f in parts[name].counts()} for name in parts}
    present = {f.name.split("_")[0] for f in EVENTS.glob("*.nc")}
    assert networks["train"] == present and networks["test"] == present
    assert set(parts["train"].step_counts()) == {"2 min", "5 min", "6 min"}
    item = parts["train"][0]
    assert item["x"].shape == (5, 64, 64) and item["y"].shape == (20, 64, 64)
    for name in ("val", "test"):  # no frame of a file in training and in a held-out split
        held = {(parts[name].events[int(w[0])].source, t) for i, w in enumerate(parts[name].windows)
                for t in parts[name].frame_times(i).tolist()}
        train = parts["train"]
        trained = {(train.events[int(w[0])].source, t) for i, w in enumerate(train.windows)
                   for t in train.frame_times(i).tolist()}
        crops = {s for s, _ in held if s.startswith("mrms") and "conus" not in s}
        assert not {h for h in held if h[0] not in crops and "conus" not in h[0]} & trained
    test = parts["test"]
    assert "mrms_20190610_ohiovalley.nc" in test.counts()
    assert np.isfinite(test[0]["y"].numpy()).all()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
