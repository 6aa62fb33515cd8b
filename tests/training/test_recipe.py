"""The default model's recipe (make train / make train-gpu) end to end on a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.recipe import build_parser, main, scored_checkpoint, stage_arguments


def test_the_stages_are_the_vae_then_the_dense_frame_from_the_vae_then_served_size_windows() -> None:
    args = build_parser().parse_args(["--name", "r", "--minutes", "10", "--vae-steps", "100",
                                      "--steps", "400", "--device", "cuda", "--batch-size", "64"])
    stages = stage_arguments(args)
    assert list(stages) == ["vae", "main", "full", "ensemble"]
    vae, main_stage, full, ensemble = stages["vae"], stages["main"], stages["full"], stages["ensemble"]
    assert vae[vae.index("--strategy") + 1] == "vae" and vae[vae.index("--max-minutes") + 1] == "2.00"
    assert main_stage[main_stage.index("--init") + 1] == "runs/r-vae/best"
    assert main_stage[main_stage.index("--advection") + 1] == "dense"
    assert main_stage[main_stage.index("--batch-size") + 1] == "64"
    assert main_stage[main_stage.index("--max-minutes") + 1] == "4.50"
    assert main_stage[main_stage.index("--size") + 1] == "64"
    assert full[full.index("--init") + 1] == "runs/r-main/best"
    assert full[full.index("--size") + 1] == "128" and full[full.index("--stride") + 1] == "64"
    assert full[full.index("--batch-size") + 1] == "16"  # the main stage's pixels per step
    assert full[full.index("--advection") + 1] == "dense"
    assert full[full.index("--max-minutes") + 1] == "1.50"
    assert ensemble[ensemble.index("--init") + 1] == "runs/r-full/best"
    assert ensemble[ensemble.index("--strategy") + 1] == "frozen_vae"  # the VAE as the full stage left it
    assert ensemble[ensemble.index("--ensemble-weight") + 1] == "1"
    assert ensemble[ensemble.index("--ensemble-motion-spread") + 1] == "2.0"
    assert ensemble[ensemble.index("--size") + 1] == "128"
    assert ensemble[ensemble.index("--lr") + 1] == "0.0001"
    assert ensemble[ensemble.index("--max-minutes") + 1] == "1.00"
    assert scored_checkpoint(stages, "r") == Path("runs/r-ensemble/last")  # its loss is not its aim
    no_full = build_parser().parse_args(["--name", "r", "--full-size", "0", "--ensemble-steps", "0"])
    assert list(stage_arguments(no_full)) == ["vae", "main"]
    assert scored_checkpoint(stage_arguments(no_full), "r") == Path("runs/r-main/best")
    small = build_parser().parse_args(["--name", "r", "--full-size", "0"])
    assert stage_arguments(small)["ensemble"][stage_arguments(small)["ensemble"].index("--init") + 1] == (
        "runs/r-main/best")


def test_with_init_the_recipe_continues_a_checkpoint_on_served_size_windows_in_the_whole_budget() -> None:
    args = build_parser().parse_args(["--name", "g", "--init", "checkpoints/default", "--minutes", "10",
                                      "--device", "cuda", "--batch-size", "64"])
    stages = stage_arguments(args)
    assert list(stages) == ["full", "ensemble"]  # no VAE or 64-cell stage: the checkpoint has them
    full, ensemble = stages["full"], stages["ensemble"]
    assert full[full.index("--init") + 1] == "checkpoints/default"
    assert full[full.index("--size") + 1] == "128" and full[full.index("--strategy") + 1] == "end_to_end"
    assert ensemble[ensemble.index("--init") + 1] == "runs/g-full/best"
    minutes = [float(stage[stage.index("--max-minutes") + 1]) for stage in (full, ensemble)]
    assert minutes == [5.4, 3.6]  # 15 : 10 of the 9 minutes the training stages get
    only_ensemble = build_parser().parse_args(["--name", "g", "--init", "ck", "--full-size", "0"])
    ensemble = stage_arguments(only_ensemble)["ensemble"]
    assert list(stage_arguments(only_ensemble)) == ["ensemble"]
    assert ensemble[ensemble.index("--init") + 1] == "ck"
    nothing_left = ["--init", "ck", "--full-size", "0", "--ensemble-steps", "0"]
    with pytest.raises(ValueError, match="--init leaves out"):
        stage_arguments(build_parser().parse_args(nothing_left))


def tiny_events(folder: Path, write_event) -> Path:
    """One tile of the model's 128 x 128 cells: a blob drifting east, 90 frames of 5 min (445 min)."""
    rng = np.random.default_rng(0)
    t, y, x = np.mgrid[:90, :128, :128].astype(np.float32)
    centre = (10.0 + 0.5 * t) % 128
    rain = 10.0 * np.exp(-((y - 64.0) ** 2 + (x - centre) ** 2) / 200.0)
    rain = (rain * rng.uniform(0.5, 1.5, rain.shape)).astype(np.float32)
    events = folder / "events"
    events.mkdir()
    write_event(events / "tiny_event.nc", rain, spacing_m=4000.0)
    return events


@pytest.mark.slow
def test_the_recipe_trains_scores_and_writes_a_small_checkpoint_on_a_tiny_budget(tmp_path, monkeypatch,
                                                                                  write_event):
    pytest.importorskip("pysteps")
    events = tiny_events(tmp_path, write_event)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "final"
    assert main(["--name", "tiny", "--data", str(events), "--minutes", "5", "--vae-steps", "2",
                 "--steps", "2", "--full-steps", "2", "--ensemble-steps", "2", "--batch-size", "4",
                 "--threads", "1", "--members", "2",
                 "--ddim-steps", "1", "2", "--max-windows", "2", "--motion-spread", "0", "1",
                 "--detail-lifetime", "120", "--blend-spread", "0.5", "--estimate-lifetime", "60",
                 "--scorecard-seeds", "2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["config"]["advection"] == "dense"
    assert manifest["training"]["config"]["size"] == 128  # the last stage, on served-size windows
    assert manifest["training"]["config"]["ensemble_weight"] == 1.0  # the last stage: the ensemble objective
    assert manifest["training"]["config"]["ensemble_motion_spread"] == 2.0
    assert manifest["training"]["config"]["strategy"] == "frozen_vae"
    full_stage = manifest["training"]["init_training"]
    assert full_stage["config"]["size"] == 128 and full_stage["config"]["strategy"] == "end_to_end"
    main_stage = full_stage["init_training"]
    assert main_stage["config"]["size"] == 64 and main_stage["config"]["strategy"] == "end_to_end"
    assert main_stage["init_training"]["config"]["strategy"] == "vae"
    assert manifest["nowcast"]["motion_spread"] in (0.0, 1.0) and manifest["nowcast"]["advection"] == "dense"
    assert manifest["nowcast"]["detail_lifetime"] == 120.0  # the scorecard's choices reach the defaults
    assert manifest["nowcast"]["detail"] == "renew"  # the recipe's default, the shipped model's
    assert manifest["nowcast"]["blend_spread"] == 0.5 and manifest["nowcast"]["estimate_lifetime"] == 60.0
    assert manifest["nowcast"]["guidance"] == 2.0  # the recipe's default, the shipped model's
    assert sorted({t["options"]["steps"] for t in manifest["scores"]["trials"]}) == [1, 2]
    assert manifest["scores"]["validation"]["seeds"] == 2 and "--seeds 2" in manifest["scores"]["command"]
    assert "--motion-spread-by-step" in manifest["scores"]["command"]  # one size per step is weighed too
    assert manifest["nowcast"]["steps"] in (1, 2)
    assert (out / "MODEL_CARD.md").is_file() and (out / "train_log.jsonl").is_file()
    assert (out / "model.safetensors").stat().st_size < 16 * 2**20  # what a GPU run can bring back


@pytest.mark.slow
def test_unscored_the_recipe_continues_the_shipped_checkpoint_and_its_manifest_keeps_every_stage(
        tmp_path, monkeypatch, write_event):
    pytest.importorskip("pysteps")  # the windows' motion fields (make pack brings them to a GPU machine)
    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "default"
    events = tiny_events(tmp_path, write_event)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "gpu-final"
    assert main(["--name", "g", "--data", str(events), "--init", str(shipped), "--minutes", "5",
                 "--full-steps", "1", "--ensemble-steps", "1", "--batch-size", "8", "--threads", "1",
                 "--no-scorecard", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "scores" not in manifest and not (out / "training_state.pt").exists()
    assert manifest["training"]["config"]["ensemble_weight"] == 1.0
    full_stage = manifest["training"]["init_training"]  # stored, though runs/g-full stays behind
    assert full_stage["config"]["init"] == str(shipped) and full_stage["config"]["size"] == 128
    shipped_manifest = json.loads((shipped / "manifest.json").read_text())
    assert full_stage["init_training"]["model_version"] == shipped_manifest["model_version"]
    assert (out / "train_log.jsonl").is_file()
    assert (out / "model.safetensors").stat().st_size < 16 * 2**20  # what a GPU run can bring back
