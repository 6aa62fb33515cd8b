"""Score a trained checkpoint on its own validation windows, choose its defaults, write its card.

``python -m training.scorecard --checkpoint runs/<name>/best --out checkpoints/default`` rebuilds
the validation split of the run (its manifest's data files and split rule, ``radar.split``),
forecasts every window as the service would (``model.nowcast.Nowcaster``), and scores it next to
persistence and pysteps extrapolation (and STEPS with ``--methods``) with the same loop and
scores as ``nowcast evaluate`` (``verification.evaluate.score_windows``).

Defaults are chosen here, on validation windows, never on the held-out ones: each of
``--advection``, ``--matching``, ``--motion-spread``, ``--guidance``, ``--guidance-share``, the
three lifetimes, ``--detail``, ``--blend-spread``, ``--antithetic`` and ``--steps`` takes one or more
values; every combination is scored and the one with the lowest fair CRPS (mean over the groups
and lead times) is kept. With
``--steps-tolerance r``, the trial with the fewest denoiser passes (:func:`network_passes`)
among those within ``(1 + r)`` times the lowest CRPS is kept instead (the sampler's time grows
with the passes; skill hardly does). With ``--select calibrated`` (the default) the choice is made
among the calibrated combinations only (when none is, among those with the fewest spread/skill
values outside the band), those whose ensemble spread/skill lies within 0.9-1.1 in
every group (one network at one step the checkpoint serves, as ``nowcast evaluate`` groups them:
MRMS at 2 and at 6 minutes) at 30 and 60 minutes (the skill issue's target; all of them when
none is): a sharp
ensemble that is not calibrated misleads the probabilities forecasters read off it, however low
its CRPS. The checkpoint is copied to
``--out`` with the chosen options as its manifest's ``nowcast`` block (what every caller of the
checkpoint then gets by default), the validation scores of every combination, and a
``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import CheckpointError, read_manifest, write_manifest
from model.nowcast import Nowcaster
from model.options import ADVECTIONS, DETAILS, MATCHINGS, PRECISIONS, NowcastOptions, default_step, flag
from model.sampler import guided_steps
from training.config import TrainConfig
from verification.evaluate import checkpoint_windows, parse_methods, score_windows, summary
from verification.metrics import threshold_to_mmh

log = logging.getLogger(__name__)

CARD_METHODS = ("stldm", "stldm_first_estimate", "persistence", "extrapolation")
SELECTIONS = ("crps", "calibrated")


def validation_scores(nowcaster: Nowcaster, windows: list, options: NowcastOptions, *,
                      methods: tuple[str, ...] = CARD_METHODS, seeds: int = 1) -> dict:
    """Per group and method, the criteria at 30 and 60 min, the ensemble's spread/skill at every
    lead time and the mean fair CRPS over all leads.

    With ``seeds`` > 1 every window is scored that many times, window ``i`` of ``n`` with seeds
    ``i, i + n, i + 2n, ...``: the scores pool them, which averages out the sampling noise of
    one draw of members (about 1 % of the mean CRPS on the shipped checkpoint's windows)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    thresholds = [threshold_to_mmh(v, "mm/h", nowcaster.config.transform) for v in (1.0, 5.0)]
    groups, _ = score_windows(nowcaster, list(windows) * seeds, options, methods=methods,
                              thresholds=thresholds, progress="validate")
    results = {}
    for name, g in sorted(groups.items()):
        results[name] = {"lead_minutes": [(k + 1) * g["step"] for k in range(nowcaster.config.t_out)],
                         "thresholds": [{"label": t.label, "mmh": t.mmh} for t in thresholds],
                         "windows": len(g["windows"]) // seeds,
                         "scores": {m: sc.to_dict() for m, sc in g["scores"].items()}}
    table = summary(results)
    crps = [r["scores"]["stldm"]["crps_all_leads"] for r in results.values()]
    by_lead = {name: {"lead_minutes": r["lead_minutes"],
                      "spread_skill": r["scores"]["stldm"].get("spread_skill_ratio")}
               for name, r in results.items()}
    return {"groups": table, "windows": {n: r["windows"] for n, r in results.items()}, "seeds": seeds,
            "spread_skill_by_lead": by_lead,
            "step_minutes": {name: g["step"] for name, g in sorted(groups.items())},
            "crps_all_leads": {name: r["scores"]["stldm"]["crps_all_leads"] for name, r in results.items()},
            "stldm_crps_all_leads": float(np.mean([c for c in crps if c is not None])) if crps else None}


def _jsonable_options(options: NowcastOptions) -> dict:
    """A trial's options as its manifest stores them (no per-step sizes: the trial's one size)."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k != "motion_spread_by_step"}


def network_passes(options: dict) -> int:
    """Denoiser passes per member of a nowcast with ``options``: one per DDIM step, and a second
    (the null condition) at each step that applies guidance."""
    steps = int(options["steps"])
    guided = guided_steps(steps, float(options.get("guidance_share", 1.0))) if options["guidance"] else 0
    return steps + guided


CALIBRATED = (0.9, 1.1)  # spread/skill band of a calibrated ensemble (the skill issue's target)


def _spread_skill(trial: dict) -> list[float]:
    """The trial's ensemble spread/skill in every group at 30 and 60 minutes (the leads it has)."""
    ratios = [methods.get("stldm", {}).get(f"spread_skill_{minutes}")
              for methods in trial["scores"]["groups"].values() for minutes in (30, 60)]
    return [r for r in ratios if r is not None]


def miscalibrated(trial: dict, band: tuple[float, float] = CALIBRATED) -> int:
    """How many of the trial's spread/skill values (every group at 30 and 60 minutes) lie outside
    ``band``."""
    low, high = band
    return sum(not low <= r <= high for r in _spread_skill(trial))


def calibrated(trial: dict, band: tuple[float, float] = CALIBRATED) -> bool:
    """Whether the trial's ensemble spread is its error's, within ``band``, in every group at 30
    and 60 minutes (the leads the groups have)."""
    return bool(_spread_skill(trial)) and miscalibrated(trial, band) == 0


def choose(trials: list[dict], steps_tolerance: float = 0.0, *, select: str = "crps") -> dict:
    """The trial with the lowest mean fair CRPS; with ``steps_tolerance`` r > 0, the one with the
    fewest denoiser passes (:func:`network_passes`: DDIM steps and guided steps) among those
    within ``(1 + r)`` times that CRPS (ties: the lower CRPS).

    ``select="calibrated"`` chooses so among the trials with the fewest spread/skill values outside
    the calibrated band (:func:`miscalibrated`): the :func:`calibrated` ones when there are any
    (sharpness subject to calibration, Gneiting, Balabdaoui and Raftery 2007), else the least
    miscalibrated, so that one group no trial calibrates does not let a trial that over-spreads
    the others win on its CRPS.
    """
    if steps_tolerance < 0:
        raise ValueError(f"steps_tolerance must be >= 0, got {steps_tolerance}")
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if select == "calibrated":
        fewest = min(miscalibrated(t) for t in trials)
        trials = [t for t in trials if miscalibrated(t) == fewest]
    best = min(t["scores"]["stldm_crps_all_leads"] for t in trials)
    close = [t for t in trials if t["scores"]["stldm_crps_all_leads"] <= best * (1 + steps_tolerance)]
    return min(close, key=lambda t: (network_passes(t["options"]), t["scores"]["stldm_crps_all_leads"]))


def by_step_trials(trials: list[dict]) -> list[dict]:
    """Trials that take a different motion perturbation size at each radar time step, put
    together from ``trials`` without another forecast.

    Trials that differ in ``motion_spread`` alone and were scored on the same windows and seeds
    give, group by group, the scores every choice of one size per step would: a group (one
    network at one step) sees only its step's size. For every such set and every choice that is
    not the same size at all steps, the trial of that choice: its options with
    ``motion_spread_by_step`` (``{"minutes": size}``; ``motion_spread`` the size at the step a
    request that names none gets, :func:`model.options.default_step`), each group's scores from the trial of
    its step's size, and their mean fair CRPS. The rule of :func:`choose` then weighs them with
    the others: per-step sizes are kept only where they calibrate or score better on the
    validation windows.
    """
    sets: dict[str, list[dict]] = {}
    for trial in trials:
        if trial["options"].get("motion_spread_by_step") or "crps_all_leads" not in trial["scores"]:
            continue
        rest = {k: v for k, v in trial["options"].items() if k != "motion_spread"}
        sets.setdefault(json.dumps(rest, sort_keys=True), []).append(trial)
    out = []
    for same in sets.values():
        by_size = {t["options"]["motion_spread"]: t for t in same}
        steps = sorted(set(same[0]["scores"]["step_minutes"].values()))
        if len(by_size) < 2 or len(steps) < 2:
            continue
        for sizes in itertools.product(sorted(by_size), repeat=len(steps)):
            if len(set(sizes)) == 1:
                continue
            size_of = dict(zip(steps, sizes, strict=True))
            base = by_size[sizes[0]]["scores"]
            scores = {key: {} for key in ("groups", "windows", "spread_skill_by_lead", "crps_all_leads")}
            for name, step in base["step_minutes"].items():
                source = by_size[size_of[step]]["scores"]
                for key in scores:
                    scores[key][name] = source[key][name]
            crps = [c for c in scores["crps_all_leads"].values() if c is not None]
            plain = size_of[default_step(steps)]
            out.append({"options": {**same[0]["options"], "motion_spread": plain,
                                    "motion_spread_by_step": {str(k): v for k, v in size_of.items()}},
                        "scores": {**scores, "seeds": base.get("seeds", 1),
                                   "step_minutes": base["step_minutes"],
                                   "stldm_crps_all_leads": float(np.mean(crps)) if crps else None}})
    return out


def init_summary(init: Path) -> dict | None:
    """What a fine-tune started from: the ``--init`` checkpoint's version, steps, wall time and
    recipe (and, in turn, what that one started from), or None when it cannot be read."""
    try:
        manifest = read_manifest(init)
    except CheckpointError:
        return None
    training = manifest.get("training") or {}
    cfg = training.get("config") or {}
    keys = ("command", "name", "init", "data", *CARD_FLAGS, "seed", "ensemble_weight",
            *ENSEMBLE_FLAGS)  # what the card writes each stage's command from (_train_command)
    return {"model_version": manifest.get("model_version"), "step": training.get("step"),
            "wall_seconds": training.get("wall_seconds"), "hardware": training.get("hardware"),
            "config": {k: cfg.get(k) for k in keys},
            "init_training": earlier_training(manifest)}


def earlier_training(manifest: dict) -> dict | None:
    """The stored summary of what a checkpoint started from, else one read from its ``--init``.

    An ``--init`` folder overwritten by this very model since (a fine-tune of
    checkpoints/default shipped back there) is skipped for what it records in turn.
    """
    training = manifest.get("training") or {}
    init = (training.get("config") or {}).get("init")
    summary = training.get("init_training") or (init_summary(Path(init)) if init else None)
    if summary and summary["model_version"] == manifest.get("model_version"):
        return summary["init_training"]
    return summary


CARD_FLAGS = ("strategy", "size", "stride", "batch_size", "pixel_frames", "advection", "motion_kmh", "steps",
              "lr", "warmup_steps", "ema_decay")
ADVANCED_FLAGS = ("strategy", "size", "batch_size", "pixel_frames")  # on the card when not the default
# the ensemble objective's settings, on the card with ensemble_weight when not the default
ENSEMBLE_FLAGS = ("ensemble_members", "ensemble_steps", "ensemble_blend", "ensemble_detail",
                  "ensemble_guidance", "ensemble_blend_spread", "ensemble_estimate", "ensemble_motion_spread")


def _train_command(cfg: dict) -> str:
    if cfg.get("command"):  # a stage run by another script records its own command line
        return str(cfg["command"])
    words = ["nowcast train --data " + " ".join(cfg.get("data") or ["../shared/radar/events"])]
    if cfg.get("name") not in (None, "default"):
        words.append(f"--name {cfg['name']}")
    if cfg.get("init"):
        words.append(f"--init {cfg['init']}")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key in CARD_FLAGS:
        value = cfg.get(key)
        if not value or value == "none" or (key in ADVANCED_FLAGS and value == defaults[key]):
            continue
        words.append(f"--{key.replace('_', '-')} {value}")
    if cfg.get("ensemble_weight"):  # the ensemble objective, and its settings that are not the defaults
        words.append(f"--ensemble-weight {cfg['ensemble_weight']}")
        words += [f"--{key.replace('_', '-')} {cfg[key]}" for key in ENSEMBLE_FLAGS
                  if cfg.get(key) is not None and cfg[key] != defaults[key]]
    return " ".join(words)


def _commands(training: dict, scorecard: str | None = None) -> str:
    """The command lines that made this checkpoint, oldest first (``scorecard``: the scorecard's)."""
    chain, node = [], training
    while node:
        chain.insert(0, node.get("config") or {})
        node = node.get("init_training")
    lines = []
    for cfg in chain:
        command = f"`{_train_command(cfg)}`"
        is_make_train = not cfg.get("init") and cfg.get("steps") == 1500 and not cfg.get("stride")
        lines.append(f"`make train` (= {command})" if is_make_train else command)
    lines.append(f"`{scorecard or 'python -m training.scorecard --checkpoint runs/<name>/best --out DIR'}`")
    return "- Commands, in order: " + ", then\n  ".join(lines) + "."


def _stages(init: dict | None) -> str:
    """One line per earlier stage of a fine-tuned checkpoint."""
    lines = []
    while init:
        wall = (init.get("wall_seconds") or 0) / 60
        lines.append(f"- Started from {init.get('model_version')}: {init.get('step')} steps, "
                     f"{wall:.1f} min on {json.dumps(init.get('hardware'))}.\n")
        init = init.get("init_training")
    return "".join(lines)


def _seeds_text(seeds: int) -> str:
    return f", each with {seeds} seeds, pooled" if seeds > 1 else ""


def _by_lead_section(by_lead: dict | None) -> str:
    """The defaults' spread/skill at every lead time of every group, as a markdown section."""
    if not by_lead:
        return ""
    lines = []
    for name, r in by_lead.items():
        cells = [f"{m} min {v:.2f}" for m, v in zip(r["lead_minutes"], r["spread_skill"] or [], strict=False)
                 if v is not None]
        lines.append(f"- {name}: " + ", ".join(cells))
    return ("## Spread/skill of the defaults by lead time\n\n"
            "The calibrated rule looks at 30 and 60 minutes; here is every lead (1: the members spread "
            "as much as their mean errs; below 1, too little).\n\n" + "\n".join(lines) + "\n\n")


def _spread_text(options: dict) -> str:
    """A trial's motion perturbation size, or its size at each step ("2 min: 1.0, 5 min: 1.25")."""
    by_step = options.get("motion_spread_by_step")
    if not by_step:
        return str(options["motion_spread"])
    return ", ".join(f"{step} min: {size}" for step, size in by_step.items())


def _checkpoint_text(checkpoint: Path | None) -> str:
    """Which of the run's checkpoints was scored, from its folder's name."""
    if checkpoint is None or checkpoint.name == "best":
        return "the lowest validation loss of the run"
    if checkpoint.name == "last":
        return "the run's last step"
    return f"`{checkpoint}`, as given"


def model_card(manifest: dict, chosen: dict, trials: list[dict], steps_tolerance: float = 0.0, *,
               select: str = "crps", checkpoint: Path | None = None) -> str:
    training = manifest["training"]
    cfg, data = training["config"], training["data"]
    rows = []
    for name, methods in chosen["scores"]["groups"].items():
        for method, row in methods.items():
            cells = [row.get(f"{k}_{m}") for k in ("csi_1mmh", "crps", "brier_1mmh", "spread_skill")
                     for m in (30, 60)]
            rows.append(f"| {name} | {method} | " + " | ".join(
                "" if v is None else f"{v:.4f}" if abs(v) < 0.1 else f"{v:.3f}" for v in cells) + " |")
    trial_rows = "\n".join(
        f"| {t['options']['steps']} | {t['options']['advection']} | {t['options']['matching']} | "
        f"{_spread_text(t['options'])} | "
        f"{t['options']['guidance']} | {t['options'].get('guidance_share', 1.0)} | "
        f"{t['options'].get('detail_lifetime', 0.0)} | {t['options'].get('detail', 'fade')} | "
        f"{t['options'].get('extrapolation_lifetime', 0.0)} | {t['options'].get('blend_spread', 0.0)} | "
        f"{t['options'].get('estimate_lifetime', 0.0)} | "
        f"{'yes' if t['options'].get('antithetic') else 'no'} | "
        f"{t['scores']['stldm_crps_all_leads']:.4f} | {'yes' if calibrated(t) else 'no'} |" for t in trials)
    rule = ("the lowest mean fair CRPS (mm/h, all groups and leads)" if not steps_tolerance else
            f"of the trials within {steps_tolerance:.1%} of the lowest mean fair CRPS (mm/h, all groups "
            "and leads), the one with the fewest denoiser passes (DDIM steps, and a second pass at "
            "each guided step),")
    if select == "calibrated":
        rule = (f"among the calibrated trials (spread/skill within {CALIBRATED[0]}-{CALIBRATED[1]} in every "
                "group at 30 and 60 minutes; when none is, the trials with the fewest values outside that "
                f"band), {rule}")
    return f"""# Default model: {manifest['model_version']}

STLDM, preset `{manifest['preset']}` ({manifest['parameters']:,} parameters), {cfg['t_in']} -> \
{cfg['t_out']} frames, trained on windows of {cfg['size']} x {cfg['size']} cells of {cfg['cell_km']} km \
at the steps {data.get('steps')} min (a step embedding). Pixels: HKO-7 convention \
`(dBZ + 10) / 70`, Marshall-Palmer Z = 200 R^1.6 (`config.json`, `transform`).

## Training
{_commands(training, (manifest.get("scores") or {}).get("command"))}
- Data: {', '.join(Path(f).name for f in data.get('files', []))}. Windows: {data.get('windows_train')} \
training, {data.get('windows_val')} validation ({json.dumps(data.get('windows_per_step', {}))}); split \
by `radar.split` ({json.dumps(data.get('split'))}): the last block of every network's time and the \
held-out regions are never trained on or selected on.
- Frame: `--advection {cfg.get('advection')}`.
- Recipe: strategy {cfg['strategy']}, {training['step']} steps of batch {cfg['batch_size']},
  AdamW lr {cfg['lr']} (warm-up {cfg['warmup_steps']}, cosine to {cfg['min_lr']}), weight decay
  {cfg['weight_decay']}, clipping {cfg['grad_clip']}, EMA {cfg['ema_decay']}, seed {cfg['seed']}.
- Wall time: {training['wall_seconds'] / 60:.1f} min on {json.dumps(training['hardware'])}.
{_stages(training.get('init_training'))}- Checkpoint: {_checkpoint_text(checkpoint)}.

## Defaults, chosen on the validation windows

Every combination below was scored on the validation windows ({json.dumps(chosen['scores']['windows'])}\
{_seeds_text(chosen['scores'].get('seeds', 1))});
{rule} is the checkpoint's default (`manifest.json`,
`nowcast`): {json.dumps(chosen['options'])}.

| DDIM steps | advection | matching | motion_spread | guidance | guidance_share | detail_lifetime | \
detail | extrapolation_lifetime | blend_spread | estimate_lifetime | antithetic | CRPS | calibrated |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{trial_rows}

## Validation scores with the defaults

Member CSI counts every member; CRPS is the fair ensemble CRPS in mm/h (the MAE of single
forecasts); Brier at 1 mm/h; spread/skill is the ensemble spread over the RMSE of its mean.
These windows chose the defaults: `nowcast evaluate` reports the held-out ones.

| group | method | CSI 1 @30 | @60 | CRPS @30 | @60 | Brier 1 @30 | @60 | spread/skill @30 | @60 |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{_by_lead_section(chosen["scores"].get("spread_skill_by_lead"))}## Licences
Trained on data from the Finnish Meteorological Institute (FMI), CC BY 4.0; KNMI (Royal Netherlands
Meteorological Institute), CC BY 4.0; MeteoSwiss, CC BY 4.0; NOAA/NSSL and NOAA/NCEP MRMS (U.S.
Government work); modified.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.scorecard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--advection", choices=ADVECTIONS, nargs="+", default=None,
                        help="frames to try (default: the one the run trained in)")
    parser.add_argument("--matching", choices=MATCHINGS, nargs="+", default=["cdf"])
    parser.add_argument("--motion-spread", type=float, nargs="+", default=[0.0],
                        help="sizes of the member-wise motion perturbations to try (dense frame)")
    parser.add_argument("--motion-spread-by-step", action="store_true",
                        help="also weigh a different size of --motion-spread at each time step the "
                        "checkpoint serves (put together from the trials, no more forecasts; "
                        "the manifest's motion_spread_by_step)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0])
    parser.add_argument("--guidance-share", type=float, nargs="+", default=[1.0],
                        help="shares of the DDIM steps, the noisiest first, that apply guidance, to try")
    parser.add_argument("--detail-lifetime", type=float, nargs="+", default=[0.0],
                        help="minutes over which the input's detail the VAE does not reproduce fades "
                        "from the members (0: none) to try")
    parser.add_argument("--detail", choices=DETAILS, nargs="+", default=["fade"],
                        help="how that detail enters the members to try: fade (the same in every "
                        "member) or renew (each member's own, renewed with noise; model/detail.py)")
    parser.add_argument("--extrapolation-lifetime", type=float, nargs="+", default=[0.0],
                        help="minutes over which the members go from the extrapolated last frame to "
                        "the model's forecast (0: the model's alone) to try")
    parser.add_argument("--blend-spread", type=float, nargs="+", default=[0.0],
                        help="how much of the members' own spread that blend keeps, 0-1, to try "
                        "(0: 1 - w; model.sampler.blend_members)")
    parser.add_argument("--estimate-lifetime", type=float, nargs="+", default=[0.0],
                        help="minutes over which that blend's target goes from the last frame to the "
                        "translator's first estimate (0: the last frame; model.sampler.blend_target) to try")
    parser.add_argument("--antithetic", type=flag, nargs="+", default=[False],
                        help="true: members in mirrored pairs (model.pairs); false: each its own draws; "
                        "to try")
    parser.add_argument("--steps", type=int, nargs="+", default=[20], help="DDIM steps")
    parser.add_argument("--steps-tolerance", type=float, default=0.0,
                        help="relative CRPS within which the trial with the fewest denoiser passes "
                             "(DDIM steps and guided steps) is kept (0: the lowest CRPS)")
    parser.add_argument("--select", choices=SELECTIONS, default="calibrated",
                        help="crps: the lowest mean fair CRPS; calibrated: the same among the trials "
                        f"whose spread/skill is within {CALIBRATED[0]}-{CALIBRATED[1]} in every group at "
                        "30 and 60 minutes (when none is, the trials with the fewest values outside it)")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="score about this many windows, evenly spaced over the split")
    parser.add_argument("--seeds", type=int, default=1,
                        help="score every validation window with this many seeds and pool them "
                             "(window i of n: seeds i, i + n, ...), averaging out the members' "
                             "sampling noise")
    parser.add_argument("--methods", type=parse_methods, default=CARD_METHODS,
                        help="methods scored next to the ensemble (add steps for pysteps STEPS)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="the denoiser's number format (model.precision); not saved as a default")
    args = parser.parse_args(argv)
    if args.steps_tolerance < 0:  # before the minutes of scoring, not after them
        parser.error(f"--steps-tolerance must be >= 0, got {args.steps_tolerance}")
    for share in args.guidance_share:
        try:
            guided_steps(1, share)  # the sampler's own check of the share
        except ValueError as err:
            parser.error(f"--guidance-share: {err}")
    if any(not 0 <= keep <= 1 for keep in args.blend_spread):
        parser.error(f"--blend-spread must be in [0, 1], got {args.blend_spread}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if any(v < 0 for v in args.estimate_lifetime):
        parser.error(f"--estimate-lifetime must be >= 0 minutes, got {args.estimate_lifetime}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    nowcaster = Nowcaster.from_checkpoint(args.checkpoint, precision=args.precision)
    manifest = read_manifest(args.checkpoint)
    earlier = earlier_training(manifest)
    if earlier:
        manifest["training"]["init_training"] = earlier
    windows = checkpoint_windows(manifest, nowcaster, "val", max_windows=args.max_windows)
    if not windows:
        raise ValueError(f"{args.checkpoint}: no validation window of {nowcaster.config.size} x "
                         f"{nowcaster.config.size} cells in its split; nothing to choose the defaults on")
    trials = []
    frames = args.advection or [nowcaster.defaults.advection]
    for (steps, advection, matching, spread, guidance, share, lifetime, detail, blend,
         keep, towards, paired) in itertools.product(
            args.steps, frames, args.matching, args.motion_spread, args.guidance, args.guidance_share,
            args.detail_lifetime, args.detail, args.extrapolation_lifetime, args.blend_spread,
            args.estimate_lifetime, args.antithetic):
        options = nowcaster.options(members=args.members, steps=steps, guidance=guidance,
                                    guidance_share=share, matching=matching, advection=advection,
                                    motion_spread=spread, detail_lifetime=lifetime,
                                    detail=detail, extrapolation_lifetime=blend, blend_spread=keep,
                                    estimate_lifetime=towards, antithetic=paired)
        scores = validation_scores(nowcaster, windows, options, methods=args.methods, seeds=args.seeds)
        log.info("%s: mean CRPS %.4f", options, scores["stldm_crps_all_leads"])
        trials.append({"options": _jsonable_options(options), "scores": scores})
    if args.motion_spread_by_step:
        trials += by_step_trials(trials)
    chosen = choose(trials, args.steps_tolerance, select=args.select)
    if args.out.resolve() != args.checkpoint.resolve():
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(args.checkpoint, args.out, ignore=shutil.ignore_patterns("training_state.pt"))
    options = {k: v for k, v in chosen["options"].items() if k != "seed"}
    manifest["nowcast"] = {**options, "step_minutes": list(nowcaster.defaults.step_minutes),
                           "cell_km": nowcaster.defaults.cell_km}
    manifest["scores"] = {"validation": chosen["scores"], "trials": trials,
                          "command": " ".join(["python -m training.scorecard", *(argv or sys.argv[1:])])}
    write_manifest(args.out, manifest)
    (args.out / "MODEL_CARD.md").write_text(model_card(manifest, chosen, trials, args.steps_tolerance,
                                                        select=args.select, checkpoint=args.checkpoint))
    log.info("wrote %s with defaults %s", args.out, options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
