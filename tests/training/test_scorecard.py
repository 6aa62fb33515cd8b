"""The scorecard: defaults chosen on the validation windows, the card's history of training stages."""

import pytest


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
    assert commands.rstrip(".").endswith("training.scorecard --checkpoint runs/<name>/best --out DIR`")
    scored = "python -m training.scorecard --checkpoint runs/ft/best --out checkpoints/default --members 4"
    assert _commands(tuned, scored).rstrip(".").endswith(f"`{scored}`")  # as the scorecard recorded it
    vae = _training({"name": "vae", "strategy": "vae", "batch_size": 8, "size": 64, "steps": 400}, 400)
    assert "--strategy vae --size 64 --batch-size 8 --steps 400" in _commands(vae)  # not the defaults
    by_script = {**vae, "config": {**vae["config"], "command": "python other.py 400"}}
    assert "`python other.py 400`" in _commands(by_script)  # a stage run by another script
    assert _stages(tuned["init_training"]) == (
        '- Started from stldm-small-aaa: 1500 steps, 15.0 min on {"device": "cpu"}.\n')
    assert _stages(None) == ""
    assert "--init" not in _commands(first)
    moving = _training({"name": "adv", "init": "checkpoints/default", "advection": "bulk", "steps": 900,
                        "ema_decay": 0.998}, 900, init_training={**tuned, "model_version": "stldm-small-bbb"})
    assert ("--init checkpoints/default --advection bulk --steps 900 --lr 0.0001 --warmup-steps 150 "
            "--ema-decay 0.998") in _commands(moving)
    assert "--advection" not in _commands({**first, "config": {**first["config"], "advection": "none"}})
    crps = _training({"name": "crps", "init": "checkpoints/default", "strategy": "frozen_vae", "steps": 250,
                      "ensemble_weight": 1.0, "ensemble_motion_spread": 1.5, "ensemble_blend": 90.0}, 250)
    objective = "--warmup-steps 150 --ensemble-weight 1.0 --ensemble-motion-spread 1.5"
    assert objective in _commands(crps)  # the objective and what it changed, not its defaults (blend 90)
    assert "--ensemble" not in _commands(first)


def test_the_card_names_the_checkpoint_of_the_run_it_scored():
    from pathlib import Path

    from training.scorecard import _checkpoint_text

    assert _checkpoint_text(Path("runs/a/best")) == "the lowest validation loss of the run"
    assert _checkpoint_text(Path("runs/a/last")) == "the run's last step"
    assert _checkpoint_text(Path("checkpoints/default")) == "`checkpoints/default`, as given"


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


def test_the_card_keeps_the_ensemble_objective_of_an_earlier_stage(tmp_path):
    import json

    from training.scorecard import _commands, init_summary

    folder = tmp_path / "crps"
    folder.mkdir()
    config = {"name": "crps", "strategy": "frozen_vae", "steps": 250, "ensemble_weight": 1.0,
              "ensemble_motion_spread": 1.5}
    manifest = {"format": "stldm-checkpoint", "format_version": 1, "model_version": "crps",
                "training": {"step": 250, "wall_seconds": 60.0, "config": config}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    later = {"step": 250, "config": {"name": "next", "init": str(folder), "steps": 250},
             "init_training": init_summary(folder)}
    stage = [line for line in _commands(later).splitlines() if "--name crps " in line]
    assert stage and "--ensemble-weight 1.0 --ensemble-motion-spread 1.5" in stage[0]


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


def _trained_run(tmp_path, tiny_model):
    """A checkpoint of the tiny model whose manifest splits one synthetic event into windows."""
    from model.checkpoint import save_checkpoint
    from radar.split import SplitRule
    from tests.verification.test_evaluate import write_event

    files = [write_event(tmp_path / "aa_event.nc", frames=30, step=5)]
    rule = SplitRule(val_fraction=0.5, test_minutes=0, block_minutes=40, test_region="", val_region="")
    config = {"name": "t", "cell_km": 4.0, "min_leads": 2, "min_coverage": 0.5, "t_in": 3, "t_out": 4,
              "size": 64, "advection": "dense", "strategy": "end_to_end", "steps": 10, "batch_size": 2,
              "lr": 1e-4, "warmup_steps": 1, "min_lr": 1e-6, "weight_decay": 0.01, "grad_clip": 1.0,
              "ema_decay": 0.0, "seed": 0, "init": "", "data": ["x"]}
    training = {"config": config,
                "step": 10, "wall_seconds": 6.0, "hardware": {"device": "cpu"},
                "data": {"files": [str(f) for f in files], "steps": [2, 5, 6], "split": rule.to_dict(),
                         "windows_per_file": {"train": {"aa_event.nc": 3}}}}
    return save_checkpoint(tiny_model, tmp_path / "run", extra={"training": training})


def test_the_scorecard_keeps_the_lowest_crps_options_as_the_checkpoints_defaults(tmp_path, tiny_model):
    pytest.importorskip("pysteps")
    import json

    from model.nowcast import Nowcaster
    from training.scorecard import main

    run = _trained_run(tmp_path, tiny_model)
    out = tmp_path / "shipped"
    assert main(["--checkpoint", str(run), "--out", str(out), "--members", "2", "--steps", "2",
                 "--motion-spread", "0", "3", "--matching", "none", "--blend-spread", "0.5",
                 "--estimate-lifetime", "45", "--seeds", "2",
                 "--select", "crps"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    trials = manifest["scores"]["trials"]
    assert [t["options"]["motion_spread"] for t in trials] == [0.0, 3.0]
    assert [t["options"]["blend_spread"] for t in trials] == [0.5, 0.5]
    assert [t["options"]["estimate_lifetime"] for t in trials] == [45.0, 45.0]
    best = min(trials, key=lambda t: t["scores"]["stldm_crps_all_leads"])
    assert manifest["nowcast"]["motion_spread"] == best["options"]["motion_spread"]
    assert manifest["nowcast"]["advection"] == "dense" and manifest["nowcast"]["matching"] == "none"
    defaults = Nowcaster.from_checkpoint(out).defaults  # every caller now gets these
    assert defaults.motion_spread == best["options"]["motion_spread"] and defaults.matching == "none"
    assert defaults.blend_spread == 0.5 and defaults.estimate_lifetime == 45.0
    card = (out / "MODEL_CARD.md").read_text()
    assert "chosen on the validation windows" in card and "| aa @5 min | stldm |" in card
    assert "| blend_spread | estimate_lifetime | antithetic | CRPS | calibrated |" in card
    assert "among the calibrated trials" not in card
    assert manifest["scores"]["validation"]["seeds"] == 2 and "each with 2 seeds, pooled" in card
    by_lead = manifest["scores"]["validation"]["spread_skill_by_lead"]["aa @5 min"]
    assert by_lead["lead_minutes"] == [5, 10, 15, 20] and len(by_lead["spread_skill"]) == 4
    assert "## Spread/skill of the defaults by lead time" in card and "- aa @5 min: 5 min " in card


def test_seeds_pool_every_window_drawn_again_with_seeds_no_other_window_uses(tmp_path, tiny_model):
    pytest.importorskip("pysteps")
    from model.checkpoint import read_manifest
    from model.nowcast import Nowcaster
    from training.scorecard import validation_scores
    from verification.evaluate import checkpoint_windows, score_windows
    from verification.metrics import threshold_to_mmh

    run = _trained_run(tmp_path, tiny_model)
    nowcaster = Nowcaster.from_checkpoint(run)
    windows = checkpoint_windows(read_manifest(run), nowcaster, "val")
    assert len(windows) >= 2
    options = nowcaster.options(members=2, steps=2, matching="none")
    methods = ("stldm", "persistence")
    one = validation_scores(nowcaster, windows, options, methods=methods)
    two = validation_scores(nowcaster, windows, options, methods=methods, seeds=2)
    assert two["windows"] == one["windows"] == {"aa @5 min": len(windows)} and two["seeds"] == 2
    thresholds = [threshold_to_mmh(v, "mm/h", nowcaster.config.transform) for v in (1.0, 5.0)]
    again, _ = score_windows(nowcaster, windows, options, methods=("stldm",), thresholds=thresholds,
                             seed=len(windows))  # the second pass: seeds n .. 2n - 1
    other = again["aa @5 min"]["scores"]["stldm"].to_dict()["crps_all_leads"]
    assert other != pytest.approx(one["stldm_crps_all_leads"], rel=1e-6)  # other members were drawn
    assert two["stldm_crps_all_leads"] == pytest.approx((one["stldm_crps_all_leads"] + other) / 2, rel=1e-5)
    assert two["groups"]["aa @5 min"]["persistence"] == one["groups"]["aa @5 min"]["persistence"]
    with pytest.raises(ValueError, match="seeds must be >= 1, got 0"):
        validation_scores(nowcaster, windows, options, methods=methods, seeds=0)


def trial(steps, crps, guidance=1.0, share=1.0):
    return {"options": {"steps": steps, "guidance": guidance, "guidance_share": share},
            "scores": {"stldm_crps_all_leads": crps}}


def test_fewer_ddim_steps_win_only_within_the_stated_tolerance_of_the_best_crps():
    from training.scorecard import choose

    trials = [trial(20, 0.1832), trial(10, 0.1830), trial(5, 0.1833)]
    assert choose(trials)["options"]["steps"] == 10  # no tolerance: the lowest CRPS
    assert choose(trials, 0.002)["options"]["steps"] == 5  # 0.1833 <= 0.1830 * 1.002
    assert choose(trials, 0.001)["options"]["steps"] == 10  # 5 steps is 0.16 % worse: out
    assert choose([trial(5, 0.20), trial(10, 0.18)], 0.05)["options"]["steps"] == 10  # 11 % worse
    with pytest.raises(ValueError, match="steps_tolerance must be >= 0"):
        choose(trials, -0.1)


def test_the_tolerance_keeps_the_fewest_denoiser_passes_counting_the_guided_steps():
    from training.scorecard import choose, network_passes

    assert network_passes(trial(5, 0.0)["options"]) == 10  # every step twice: conditional and null
    assert network_passes(trial(5, 0.0, share=0.4)["options"]) == 7
    assert network_passes(trial(5, 0.0, guidance=0.0, share=0.4)["options"]) == 5
    assert network_passes({"steps": 20, "guidance": 1.0}) == 40  # trials scored before the share
    trials = [trial(5, 0.1833), trial(5, 0.1836, share=0.4), trial(10, 0.1830, share=0.2)]
    assert choose(trials, 0.005)["options"]["guidance_share"] == 0.4  # 7 passes against 10 and 12
    kept = choose(trials, 0.002)["options"]  # 0.1836 is 0.33 % worse: out; 10 passes beat 12
    assert (kept["steps"], kept["guidance_share"]) == (5, 1.0)


def calibration_trial(spread, crps, ratios):
    """A trial whose stldm spread/skill at 30 and 60 minutes is ``ratios`` per group."""
    groups = {name: {"stldm": {"spread_skill_30": r30, "spread_skill_60": r60},
                     "persistence": {"spread_skill_30": None, "spread_skill_60": None}}
              for name, (r30, r60) in ratios.items()}
    return {"options": {"steps": 5, "guidance": 1.0, "guidance_share": 0.4, "motion_spread": spread},
            "scores": {"stldm_crps_all_leads": crps, "groups": groups}}


def test_the_calibrated_rule_keeps_the_lowest_crps_among_ensembles_whose_spread_matches_their_error():
    from training.scorecard import calibrated, choose, miscalibrated

    wide = calibration_trial(2.0, 0.1805, {"knmi": (1.05, 1.13), "mrms": (1.15, None)})
    fit = calibration_trial(1.5, 0.1812, {"knmi": (0.97, 1.09), "mrms": (1.10, None)})
    narrow = calibration_trial(1.0, 0.1830, {"knmi": (0.91, 0.95), "mrms": (0.93, None)})
    assert not calibrated(wide) and calibrated(fit) and calibrated(narrow)  # the 2-min group has no 60
    assert choose([wide, fit, narrow])["options"]["motion_spread"] == 2.0  # crps: the lowest CRPS
    assert choose([wide, fit, narrow], select="calibrated")["options"]["motion_spread"] == 1.5
    under = calibration_trial(1.0, 0.1830, {"knmi": (0.89, 0.95), "mrms": (0.93, None)})
    assert (miscalibrated(wide), miscalibrated(under), miscalibrated(fit)) == (2, 1, 0)
    # none calibrated: the least miscalibrated wins, not the lowest CRPS of an over-spread trial
    assert choose([wide, under], select="calibrated") is under
    # one group no trial calibrates (MRMS at 6 minutes, training step 15): the rest still decide
    six = {"mrms6": (1.19, None)}
    wide6 = calibration_trial(2.0, 0.1805, {"knmi": (1.05, 1.13), "mrms": (1.15, None), **six})
    fit6 = calibration_trial(1.5, 0.1812, {"knmi": (0.97, 1.09), "mrms": (1.10, None), **six})
    narrow6 = calibration_trial(1.0, 0.1830, {"knmi": (0.91, 0.95), "mrms": (0.93, None), **six})
    assert not any(calibrated(t) for t in (wide6, fit6, narrow6))
    assert choose([wide6, fit6, narrow6], select="calibrated") is fit6
    with pytest.raises(ValueError, match="select must be one of"):
        choose([wide], select="sharpest")


@pytest.mark.parametrize("arguments, message", [
    (["--steps-tolerance", "-0.1"], "--steps-tolerance must be >= 0, got -0.1"),
    (["--blend-spread", "0", "1.5"], "--blend-spread must be in [0, 1], got [0.0, 1.5]"),
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--estimate-lifetime", "0", "-30"], "--estimate-lifetime must be >= 0 minutes, got [0.0, -30.0]"),
])
def test_a_value_out_of_range_is_refused_before_any_window_is_scored(tmp_path, capsys, arguments, message):
    from training.scorecard import main

    with pytest.raises(SystemExit):  # the checkpoint does not exist: nothing was loaded
        main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "out"), *arguments])
    assert message in capsys.readouterr().err


def sized_trial(spread, knmi, mrms, blend=0.5):
    """A trial scored on a 5-minute and a 2-minute group: (crps over the leads, spread/skill @30, @60)."""
    groups, crps, by_lead = {}, {}, {}
    for name, (c, r30, r60) in (("knmi @5 min", knmi), ("mrms @2 min", mrms)):
        groups[name] = {"stldm": {"crps_30": c, "spread_skill_30": r30, "spread_skill_60": r60}}
        crps[name], by_lead[name] = c, {"lead_minutes": [30], "spread_skill": [r30]}
    return {"options": {"steps": 5, "guidance": 2.0, "guidance_share": 0.4, "motion_spread": spread,
                        "blend_spread": blend},
            "scores": {"groups": groups, "crps_all_leads": crps, "spread_skill_by_lead": by_lead,
                       "windows": {"knmi @5 min": 9, "mrms @2 min": 12}, "seeds": 2,
                       "step_minutes": {"knmi @5 min": 5, "mrms @2 min": 2},
                       "stldm_crps_all_leads": (knmi[0] + mrms[0]) / 2}}


def test_a_size_per_time_step_is_put_together_from_the_trials_and_kept_when_it_alone_calibrates():
    from training.scorecard import by_step_trials, calibrated, choose

    # 5 minutes needs the larger size to spread enough, 2 minutes the smaller not to over-spread
    small = sized_trial(1.0, knmi=(0.130, 0.85, 0.95), mrms=(0.310, 1.05, None))
    large = sized_trial(1.25, knmi=(0.128, 0.98, 1.08), mrms=(0.307, 1.12, None))
    other = sized_trial(1.0, knmi=(0.120, 0.80, 0.90), mrms=(0.300, 1.30, None), blend=0.0)
    made = by_step_trials([small, large, other])
    assert [t["options"]["motion_spread_by_step"] for t in made] == [{"2": 1.0, "5": 1.25},
                                                                   {"2": 1.25, "5": 1.0}]
    mixed = made[0]
    assert mixed["options"]["motion_spread"] == 1.25  # what a request with no step (5 minutes) gets
    assert mixed["options"]["blend_spread"] == 0.5  # only trials that differ in the size alone are mixed
    assert mixed["scores"]["groups"]["knmi @5 min"] == large["scores"]["groups"]["knmi @5 min"]
    assert mixed["scores"]["groups"]["mrms @2 min"] == small["scores"]["groups"]["mrms @2 min"]
    assert mixed["scores"]["stldm_crps_all_leads"] == pytest.approx((0.128 + 0.310) / 2)
    assert mixed["scores"]["spread_skill_by_lead"]["knmi @5 min"]["spread_skill"] == [0.98]
    assert not calibrated(small) and not calibrated(large) and calibrated(mixed)
    assert choose([small, large, other, *made], select="calibrated") is mixed
    assert by_step_trials([small, other]) == []  # one size per set of options: nothing to mix
