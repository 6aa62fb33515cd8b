"""Known answers of the model-card scores: fair CRPS and contingency-table CSI."""

import numpy as np
import pytest

from training.scorecard import Counts, fair_crps


def test_fair_crps_of_a_perfect_ensemble_is_zero():
    truth = np.full((4, 4), 3.0)
    assert fair_crps(np.stack([truth] * 5), truth, np.ones((4, 4), bool)) == pytest.approx(0.0)


def test_fair_crps_of_one_member_is_the_absolute_error():
    truth = np.zeros((2, 2))
    member = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    assert fair_crps(member, truth, np.ones((2, 2), bool)) == pytest.approx(2.5)


def test_fair_crps_of_two_symmetric_members_around_the_truth():
    # members y-1 and y+1: mean |X - y| = 1, spread term |X1 - X2| * 2 / (2 * 2 * 1) = 1
    truth = np.zeros((1, 1))
    members = np.array([[[-1.0]], [[1.0]]])
    assert fair_crps(members, truth, np.ones((1, 1), bool)) == pytest.approx(0.0)


def test_crps_ignores_pixels_without_data():
    truth = np.zeros((1, 2))
    members = np.array([[[1.0, 100.0]]])
    assert fair_crps(members, truth, np.array([[True, False]])) == pytest.approx(1.0)


def test_csi_from_summed_counts():
    counts = Counts(1)
    truth = np.array([[2.0, 2.0, 0.0, 0.0]])
    forecast = np.array([[[2.0, 0.0, 2.0, 0.0]]])  # one hit, one miss, one false alarm
    counts.add(0, forecast, truth, np.ones((1, 4), bool), threshold=1.0)
    counts.add(0, forecast, truth, np.ones((1, 4), bool), threshold=1.0)
    assert counts.csi()[0] == pytest.approx(1 / 3)


def _training(config: dict, step: int, init_training=None) -> dict:
    base = {"data": ["../shared/radar/events"], "steps": 1500, "lr": 1e-4, "warmup_steps": 150,
            "batch_size": 4, "strategy": "end_to_end", "seed": 0, "init": "", "stride": None}
    return {"config": {**base, **config}, "step": step, "wall_seconds": 600.0 * step / 1000,
            "hardware": {"device": "cpu"}, "init_training": init_training}


def test_the_card_of_a_fine_tuned_model_gives_every_stage_in_order():
    from training.scorecard import _commands, _stages

    first = _training({"name": "default"}, 1500)
    tuned = _training({"name": "ft", "init": "checkpoints/default", "stride": 64, "steps": 800}, 800,
                      init_training={**first, "model_version": "stldm-small-aaa"})
    commands = _commands(tuned)
    fine_tune = "--init checkpoints/default --stride 64 --steps 800"
    assert commands.index("`make train`") < commands.index(fine_tune)
    assert commands.rstrip(".").endswith("--out checkpoints/default`")
    assert _stages(tuned["init_training"]) == (
        '- Started from stldm-small-aaa: 1500 steps, 15.0 min on {"device": "cpu"}.\n')
    assert _stages(None) == ""
    assert "--init" not in _commands(first)
    moving = _training({"name": "adv", "init": "checkpoints/default", "advection": "bulk", "steps": 900,
                        "ema_decay": 0.998}, 900, init_training={**tuned, "model_version": "stldm-small-bbb"})
    assert ("--init checkpoints/default --advection bulk --steps 900 --lr 0.0001 --warmup-steps 150 "
            "--ema-decay 0.998") in _commands(moving)
    assert "--advection" not in _commands({**first, "config": {**first["config"], "advection": "none"}})


def test_init_summary_follows_the_chain_of_fine_tunes(tmp_path):
    import json

    from training.scorecard import init_summary

    def save(name: str, init: str, step: int) -> None:
        folder = tmp_path / name
        folder.mkdir()
        manifest = {"format": "stldm-checkpoint", "format_version": 1, "model_version": name,
                    "training": {"step": step, "wall_seconds": 60.0, "hardware": {"device": "cpu"},
                                 "config": {"init": init, "stride": 64}}}
        (folder / "manifest.json").write_text(json.dumps(manifest))

    save("first", "", 1500)
    save("second", str(tmp_path / "first"), 1400)
    summary = init_summary(tmp_path / "second")
    assert (summary["model_version"], summary["step"]) == ("second", 1400)
    assert (summary["init_training"]["model_version"], summary["init_training"]["step"]) == ("first", 1500)
    assert summary["init_training"]["init_training"] is None
    assert init_summary(tmp_path / "missing") is None


def test_init_summary_skips_an_init_folder_overwritten_by_the_model_itself(tmp_path):
    import json

    from training.scorecard import init_summary

    def save(folder, version: str, init: str, init_training=None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        training = {"step": 10, "wall_seconds": 60.0, "config": {"init": init}}
        if init_training:
            training["init_training"] = init_training
        (folder / "manifest.json").write_text(json.dumps(
            {"format": "stldm-checkpoint", "format_version": 1, "model_version": version,
             "training": training}))

    # runs/ft/best fine-tuned checkpoints/default (version "first"), then was shipped back there
    shipped = tmp_path / "checkpoints" / "default"
    save(shipped, "tuned", "", init_training={"model_version": "first", "step": 1500, "init_training": None})
    save(tmp_path / "runs" / "ft" / "best", "tuned", str(shipped))
    summary = init_summary(tmp_path / "runs" / "ft" / "best")
    assert summary["model_version"] == "tuned"
    assert summary["init_training"]["model_version"] == "first"


def test_score_puts_extrapolation_next_to_persistence_on_moving_rain(tmp_path, write_event, tiny_model):
    pytest.importorskip("pysteps")
    from model.transform import PixelTransform
    from tests.training.helpers import build_windows as build_datasets
    from training.scorecard import score

    rain = np.zeros((7, 64, 64), dtype=np.float32)
    for t in range(7):  # a 16 x 12 block of 8 mm/h moving east 2 cells per step
        rain[t, 24:40, 8 + 2 * t:20 + 2 * t] = 8.0
    path = write_event(tmp_path / "moving.nc", rain)
    windows, _ = build_datasets([path], t_in=3, t_out=4, step_minutes=5, size=64, cell_km=1.0,
                                transform=PixelTransform(), val_fraction=0.0, augment=False)
    scores = score(tiny_model, windows, members=2, extrapolation=True)
    assert set(scores) == {"ensemble", "first_estimate", "persistence", "extrapolation"}
    assert all(len(s["csi"]) == len(s["crps"]) == 4 for s in scores.values())
    extrapolated, persisted = scores["extrapolation"], scores["persistence"]
    assert persisted["csi"][-1] == pytest.approx(4 / 20)  # 12 wide, 8 cells apart: 4 of 20 columns
    assert extrapolated["csi"][-1] > 0.7 > persisted["csi"][-1]
    assert extrapolated["crps"][-1] < persisted["crps"][-1]
    assert "extrapolation" not in score(tiny_model, windows, members=2)
