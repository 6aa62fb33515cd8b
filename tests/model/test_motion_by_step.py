"""A checkpoint's motion perturbation size by radar time step (``motion_spread_by_step``)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest

from model.config import STLDMConfig
from model.nowcast import Nowcaster
from model.options import NowcastDefaults

BLOCK = {"advection": "dense", "motion_spread": 1.25, "cell_km": 4.0,
         "motion_spread_by_step": {"2": 1.0, "5": 1.25, "6": 0.75}}


@pytest.fixture
def config() -> STLDMConfig:
    return STLDMConfig.small(t_in=3, t_out=4, size=64)  # serves 2, 5 and 6 minutes


class Recorder:
    """Stands in for STLDM: persistence of the last frame; records the motion_spread of each call."""

    model_version = "recorder-1"

    def __init__(self, config: STLDMConfig) -> None:
        self.config, self.spreads = config, []

    def forecast(self, x, *, seed, step_minutes, motion, cell_km, members, motion_spread, **options):
        self.spreads.append((step_minutes, motion_spread))
        b, _, h, w = x.shape
        out = x[:, -1][:, None, None].expand(b, members, self.config.t_out, h, w)
        return SimpleNamespace(members=out, first_estimate=out[:, 0])


def test_a_request_without_motion_spread_gets_its_steps_size_and_one_with_it_gets_its_own(config):
    defaults = NowcastDefaults.from_manifest({"nowcast": BLOCK}, config)
    assert defaults.motion_spread_by_step == ((2, 1.0), (5, 1.25), (6, 0.75))
    opts = defaults.resolve()
    assert [opts.for_step(s).motion_spread for s in (2, 5, 6)] == [1.0, 1.25, 0.75]
    assert opts.for_step(10).motion_spread == 1.25  # a step the map does not list: motion_spread
    assert opts.for_step(2).motion_spread_by_step == ()  # the options a nowcast ran with: one size
    asked = defaults.resolve(motion_spread=0.5)  # the request's size holds at every step
    assert [asked.for_step(s).motion_spread for s in (2, 5, 6)] == [0.5, 0.5, 0.5]
    assert defaults.to_dict()["motion_spread_by_step"] == {"2": 1.0, "5": 1.25, "6": 0.75}
    older = NowcastDefaults.from_manifest({"nowcast": {**BLOCK, "motion_spread_by_step": None}}, config)
    assert older.resolve().for_step(2).motion_spread == 1.25  # no map: one size at every step


@pytest.mark.parametrize("sizes, message", [
    ({"2": 11.0}, r"motion_spread must be in \[0, 10\]"),
    ({"2.5": 1.0}, "steps are whole minutes >= 1, got '2.5'"),
    ({"0": 1.0}, "steps are whole minutes >= 1, got '0'"),
])
def test_a_bad_size_or_step_in_the_map_is_refused_naming_it(config, sizes, message):
    with pytest.raises(ValueError, match=message):
        block = {**BLOCK, "motion_spread_by_step": sizes}
        NowcastDefaults.from_manifest({"nowcast": block}, config).resolve()


def test_the_nowcast_samples_each_step_with_its_size_and_reports_it(config):
    model = Recorder(config)
    nowcaster = Nowcaster(model, NowcastDefaults.from_manifest({"nowcast": BLOCK}, config))
    rng = np.random.default_rng(0)
    frames = rng.gamma(0.5, 2.0, (3, 40, 40)).astype(np.float32)
    start = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    for step, size in ((2, 1.0), (5, 1.25), (6, 0.75)):
        times = [start + dt.timedelta(minutes=step * i) for i in range(3)]
        out = nowcaster.nowcast(frames, timestamps=times, members=2)
        assert model.spreads[-1] == (step, size)
        assert out.options.motion_spread == size and out.options.motion_spread_by_step == ()
    out = nowcaster.nowcast(frames, timestamps=times, members=2, motion_spread=2.0)
    assert model.spreads[-1] == (6, 2.0) and out.options.motion_spread == 2.0


def test_the_scoring_loop_forecasts_each_window_with_its_steps_size(config):
    """``nowcast evaluate`` and the scorecard score the defaults as the service delivers them."""
    from radar.split import Window
    from verification.evaluate import score_windows
    from verification.metrics import threshold_to_mmh

    model = Recorder(config)
    nowcaster = Nowcaster(model, NowcastDefaults.from_manifest({"nowcast": BLOCK}, config))
    rng = np.random.default_rng(1)
    windows = []
    for network, step in (("mrms", 2), ("knmi", 5), ("mrms", 6)):
        times = np.datetime64("2024-05-01T12:00") + np.arange(7) * np.timedelta64(step, "m")
        pixels = rng.uniform(0, 0.6, (7, 64, 64)).astype(np.float32)
        windows.append(Window(source=f"{network}.nc", network=network, step_minutes=step,
                              times=times.astype("datetime64[ns]"), y0=0, x0=0, pixels=pixels,
                              valid=np.ones(pixels.shape, bool)))
    thresholds = [threshold_to_mmh(1.0, "mm/h", config.transform)]
    score_windows(nowcaster, windows, nowcaster.options(members=2), methods=("stldm",), thresholds=thresholds)
    assert model.spreads == [(2, 1.0), (5, 1.25), (6, 0.75)]
    model.spreads.clear()
    score_windows(nowcaster, windows, nowcaster.options(members=2, motion_spread=0.5), methods=("stldm",),
                  thresholds=thresholds)
    assert model.spreads == [(2, 0.5), (5, 0.5), (6, 0.5)]
