"""The shared real events give training and validation windows for the 5 -> 20 protocol at 5 min."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.config import STLDMConfig
from training.data import build_datasets

# /work/main/tests/training/test_real_events.py -> /work/shared/radar/events
EVENTS = Path(__file__).resolve().parents[3] / "shared" / "radar" / "events"


@pytest.mark.slow
@pytest.mark.skipif(not EVENTS.is_dir(), reason=f"real radar events not found at {EVENTS}")
def test_real_events_give_train_and_validation_windows_quietly(capsys) -> None:
    config = STLDMConfig.small(t_in=5, t_out=20, size=128)
    train, val = build_datasets(sorted(EVENTS.glob("*.nc")), t_in=config.t_in, t_out=config.t_out,
                                step_minutes=5, size=config.size, cell_km=4.0, transform=config.transform)
    assert len(train) > 0 and len(val) > 0
    assert set(train.counts()) | set(val.counts()) <= {"fmi_20160928.nc", "knmi_20100826.nc"}  # MRMS: 2 min
    item = train[0]
    assert item["x"].shape == (5, 128, 128) and item["y"].shape == (20, 128, 128)
    assert 0.5 <= item["valid"].float().mean() <= 1.0
    train_frames = {t for i in range(len(train)) for t in train.frame_times(i).tolist()}
    val_frames = {t for i in range(len(val)) for t in val.frame_times(i).tolist()}
    assert not train_frames & val_frames
    assert np.isfinite(val[0]["y"].numpy()).all()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
