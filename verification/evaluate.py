"""``nowcast evaluate``: verify a checkpoint against pysteps on held-out radar windows.

Every method forecasts the same windows from the same inputs and is scored on the same
cells, in mm/h:

- ``stldm``: the STLDM ensemble exactly as the service delivers it (``model.nowcast.Nowcaster``
  with the checkpoint's defaults, seed ``seed + window``; ``--matching``, ``--advection``,
  ``--motion-spread``, ``--detail-lifetime``, ``--detail``, ``--extrapolation-lifetime``,
  ``--blend-spread``, ``--estimate-lifetime``, ``--antithetic`` / ``--no-antithetic``, ``--steps``,
  ``--guidance`` and ``--guidance-share`` override a default);
- ``stldm_first_estimate``: the translator's decoded first estimate of the same call;
- ``persistence``: the last input frame;
- ``extrapolation``: pysteps Lucas-Kanade motion + semi-Lagrangian advection;
- ``steps``: the pysteps STEPS ensemble with as many members, seed ``seed + window``.

``methods`` (``--methods stldm,persistence``) scores a subset; a method left out is not run at
all (so leaving out ``extrapolation`` and ``steps`` skips pysteps, the slow part on a CPU). Its
timing is then None in ``scores.json`` ("nan" in the report) and ``case.png`` needs both
``stldm`` and ``steps``.

Held-out windows
    The windows are the ``test`` split of the checkpoint's own split rule (``radar.split``,
    recorded in its manifest with its data files): the last block of every network's time and
    the held-out region(s), never used for training or for choosing checkpoints and defaults.
    ``--split-from CHECKPOINT`` takes another checkpoint's rule and files (to score an older
    model on the same windows); files that gave the evaluated checkpoint training or validation
    windows are then refused unless ``--allow-training-data``. ``--events`` restricts the files.

Windows and steps
    ``t_in`` inputs and up to ``t_out`` leads on ``size x size`` tiles that do not overlap, at
    every step the checkpoint serves that a network's files give (``training.data``: 5 min for
    the 5-minute networks; 2 min and, every third frame, 6 min for the 2-minute MRMS files), as
    a forecaster with radar at that step would request them. Windows are cut short at the end
    of the held-out time; the leads they lack are left out of every score. Scores are kept per
    *group* of one network and one step (lead times in minutes differ between steps) and
    reported per group.

Scoring
    Cells where the truth has no data are left out. NaN in a forecast (pysteps advects
    no-data in from outside the domain) counts as 0 mm/h; the fraction so filled is recorded.
    SSIM is computed on model pixels (data range 1, the paper's convention), all other scores
    on mm/h. Timing: wall seconds of each STLDM ensemble call and each STEPS call (the same
    members, lead times and input), median over the windows after the first; torch runs on
    ``threads`` CPU threads (default 1, as STEPS runs with one worker).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from model.checkpoint import read_manifest
from model.nowcast import Nowcaster
from model.options import ADVECTIONS, DETAILS, MATCHINGS, OPTIONS, PRECISION_SETTINGS, NowcastOptions
from radar.split import SplitRule, Window, WindowShape, windows_of
from verification.baselines import extrapolation_nowcast, steps_nowcast
from verification.metrics import PAPER_THRESHOLDS_255, Threshold, threshold_to_mmh
from verification.report import REPORT_THRESHOLDS_MMH, markdown_report
from verification.scores import FSS_SCALES, POOLS, MethodScores, jsonable

log = logging.getLogger(__name__)

METHODS = ("stldm", "stldm_first_estimate", "persistence", "extrapolation", "steps")
ENSEMBLES = ("stldm", "steps")


@dataclass(frozen=True)
class EvaluateOptions:
    """Arguments of :func:`evaluate`; names match the command-line flags. ``None`` options of
    the forecast take the checkpoint's defaults."""

    checkpoint: Path
    events: tuple[Path, ...] = ()
    split_from: Path | None = None
    members: int | None = None
    max_windows: int | None = None
    out: Path = Path("out/evaluate")
    seed: int = 0
    thresholds: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)  # mm/h
    paper_thresholds: str = "hko7"
    matching: str | None = None
    advection: str | None = None
    motion_spread: float | None = None
    detail_lifetime: float | None = None
    detail: str | None = None
    extrapolation_lifetime: float | None = None
    blend_spread: float | None = None
    estimate_lifetime: float | None = None
    antithetic: bool | None = None
    guidance: float | None = None
    guidance_share: float | None = None
    steps: int | None = None
    allow_training_data: bool = False
    lpips_weights: Path | None = None
    fvd_weights: Path | None = None
    plots: bool = True
    threads: int = 1  # torch CPU threads; 1 matches STEPS' single worker (equal resources)
    methods: tuple[str, ...] = METHODS
    precision: str = "auto"  # the denoiser's number format (model.precision), as the worker's default


def training_files(manifest: dict) -> set[str]:
    """File names that gave training or validation windows to the checkpoint."""
    per_file = manifest.get("training", {}).get("data", {}).get("windows_per_file", {})
    return {name for split in per_file.values() for name, n in split.items() if n > 0}


def checkpoint_windows(manifest: dict, nowcaster: Nowcaster, which: str, *, split_from: Path | None = None,
                       events: tuple[Path, ...] = (), allow_training_data: bool = False,
                       max_windows: int | None = None) -> list[Window]:
    """The ground windows of split ``which`` of a checkpoint's own split rule and files (or of
    ``split_from``'s), ``config.size`` wide without overlap, at every step the checkpoint serves
    that a file gives (a 2-minute file gives 2 and 6 minutes; in file, step and time order).

    ``events`` restricts the files; with ``split_from``, files that gave this checkpoint
    training or validation windows are refused unless ``allow_training_data``.
    """
    source = manifest if split_from is None else read_manifest(split_from)
    training = source.get("training") or {}
    cfg, data = training.get("config") or {}, training.get("data") or {}
    if "split" not in data:
        raise ValueError(f"{split_from or manifest.get('model_version')} records no split rule (trained "
                         "before radar.split): pass --split-from a checkpoint that does")
    files = [Path(f) for f in data["files"]]
    if events:  # read from where they are given (the manifest records where they were)
        given = {p.name: p for p in events}
        files = [given[f.name] for f in files if f.name in given]
        if not files:
            raise ValueError(f"none of {sorted(given)} is among the split's files")
    if split_from is not None:
        used = training_files(manifest)
        for path in files:
            if path.name in used and not allow_training_data:
                raise ValueError(f"{path.name} gave training/validation windows to the checkpoint "
                                 "(manifest); pass --events without it or --allow-training-data")
    config = nowcaster.config
    shape = WindowShape(t_in=config.t_in, t_out=config.t_out, size=config.size, stride=config.size,
                        min_leads=cfg.get("min_leads", 6), min_coverage=cfg.get("min_coverage", 0.5),
                        min_rain_fraction=cfg.get("min_rain_fraction", 0.0))
    windows = windows_of(files, which=which, shape=shape, rule=SplitRule(**data["split"]),
                         steps=nowcaster.defaults.step_minutes, cell_km=float(cfg.get("cell_km", 4.0)),
                         transform=config.transform)
    if max_windows:
        windows = windows[:: max(1, len(windows) // max_windows)]
    return windows


def group_name(window: Window) -> str:
    return f"{window.network} @{window.step_minutes} min"


def perceptual_status(name: str, weights: Path | None) -> str:
    """LPIPS / FVD need pretrained networks (VGG, I3D) that this project does not ship.

    Without weights the score is skipped (logged, "skipped" in the report). A weight file is
    refused with a clear error: the loaders are not implemented yet, and silently scoring with
    random networks would give meaningless numbers.
    """
    if weights is None:
        log.info("%s skipped: it needs pretrained network weights; pass --%s-weights FILE",
                 name.upper(), name)
        return f"skipped (no --{name}-weights given)"
    if not Path(weights).is_file():
        raise ValueError(f"--{name}-weights {weights}: no such file")
    raise ValueError(f"--{name}-weights: loading {name.upper()} networks from a weight file is not "
                     f"implemented in this version; run without --{name}-weights to skip {name.upper()}")


def parse_methods(methods: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The methods to score, in the order of ``METHODS``, from a comma list or a sequence.

    Raises ``ValueError`` naming the valid choices for an unknown or empty selection.
    """
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = [m for m in names if m]
    unknown = sorted(set(names) - set(METHODS))
    if unknown or not names:
        raise ValueError(f"methods must be a comma list among {', '.join(METHODS)}; got {methods!r}")
    return tuple(m for m in METHODS if m in names)


def methods_argument(text: str) -> tuple[str, ...]:
    """``--methods``: :func:`parse_methods` with argparse's error type (the message survives)."""
    import argparse

    try:
        return parse_methods(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def score_windows(nowcaster: Nowcaster, windows: list[Window], options: NowcastOptions, *,
                  methods: tuple[str, ...], thresholds: list[Threshold], seed: int = 0,
                  progress: str = "evaluate") -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Forecast every window with every method and accumulate the scores per group.

    The one scoring loop of the project: ``nowcast evaluate`` runs it on the held-out windows,
    the scorecard (``training.scorecard``) on the validation windows.

    Parameters
    ----------
    nowcaster : the checkpoint's pipeline; STLDM forecasts exactly as the service's.
    windows : ground windows (:func:`radar.split.windows_of`), ``t_in`` inputs and up to
        ``t_out`` leads.
    options : the STLDM options (members also size the STEPS ensemble); window ``i`` uses seed
        ``seed + i``, and its step's ``motion_spread`` where ``motion_spread_by_step`` gives one.
    methods : among :data:`METHODS`.
    thresholds : the event thresholds of the categorical and probabilistic scores.

    Returns
    -------
    groups : per group name (:func:`group_name`): ``windows`` (their sources, starts, origins
        and leads), ``step``, ``case`` (the first whole window, for plots) and ``scores`` (a
        :class:`~verification.scores.MethodScores` per method).
    seconds : wall seconds per window of ``stldm`` and ``steps``.
    """
    from tqdm import tqdm

    config, transform = nowcaster.config, nowcaster.config.transform
    cell_km = nowcaster.defaults.cell_km or 4.0
    t_in, t_out = config.t_in, config.t_out
    groups: dict[str, dict] = {}
    seconds: dict[str, list[float]] = {"stldm": [], "steps": []}
    run_stldm = bool({"stldm", "stldm_first_estimate"} & set(methods))
    for i, win in enumerate(tqdm(windows, desc=progress, unit="window")):
        name = group_name(win)
        if name not in groups:
            groups[name] = {"windows": [], "step": win.step_minutes, "case": None, "scores": {
                m: MethodScores(thresholds, t_out, options.members if m in ENSEMBLES else 1, m in ENSEMBLES,
                                seed) for m in methods}}
        group = groups[name]
        values = np.where(win.valid, transform.from_pixel(win.pixels, "mm/h"), np.nan)
        x, n_leads = values[:t_in], len(values) - t_in
        truth = np.zeros((t_out, *x.shape[1:]), np.float32)
        valid = np.zeros(truth.shape, bool)
        truth[:n_leads], valid[:n_leads] = np.nan_to_num(values[t_in:], nan=0.0), win.valid[t_in:]
        forecasts = {}
        if run_stldm:
            times = [np.datetime64(t, "s").astype(object) for t in win.times[:t_in]]
            start = time.perf_counter()
            given = options.for_step(win.step_minutes)  # motion_spread: this step's size, as the service's
            out = nowcaster.nowcast(x, unit="mm/h", timestamps=times, seed=seed + i,
                                    **{name: getattr(given, name) for name in OPTIONS})
            seconds["stldm"].append(time.perf_counter() - start)
            forecasts["stldm"] = out.members
            forecasts["stldm_first_estimate"] = out.first_estimate[None]
        if "steps" in methods:
            start = time.perf_counter()
            forecasts["steps"] = steps_nowcast(x, n_members=options.members, n_leadtimes=t_out,
                                               timestep_minutes=win.step_minutes, km_per_pixel=cell_km,
                                               seed=seed + i)
            seconds["steps"].append(time.perf_counter() - start)
        forecasts["persistence"] = np.repeat(np.nan_to_num(x[-1:], nan=0.0)[None], t_out, axis=1)
        if "extrapolation" in methods:
            forecasts["extrapolation"] = extrapolation_nowcast(x, n_leadtimes=t_out)[None]
        forecasts = {m: forecasts[m] for m in methods}
        for method, fc in forecasts.items():
            group["scores"][method].add(fc, truth, valid, transform)
        start_time = f"{np.datetime_as_string(win.times[0], unit='s')}Z"
        group["windows"].append({"source": win.source, "start": start_time, "y0": win.y0, "x0": win.x0,
                                 "leads": n_leads})
        if group["case"] is None and {"stldm", "steps"} <= set(methods) and n_leads == t_out:
            group["case"] = {"window": len(group["windows"]) - 1, "inputs": x, "truth": truth, **forecasts}

    return groups, seconds


def evaluate(opts: EvaluateOptions) -> dict:
    """Run the evaluation and write ``scores.json``, ``report.md`` and plots under ``opts.out``."""
    import torch

    from model.precision import resolve_precision

    methods = parse_methods(opts.methods)
    if opts.paper_thresholds not in (*PAPER_THRESHOLDS_255, "none"):
        raise ValueError(f"paper_thresholds must be one of {(*PAPER_THRESHOLDS_255, 'none')}")
    perceptual = {name: perceptual_status(name, w)
                  for name, w in (("lpips", opts.lpips_weights), ("fvd", opts.fvd_weights))}
    if opts.threads < 1:
        raise ValueError(f"threads must be >= 1, got {opts.threads}")
    torch.set_num_threads(opts.threads)
    manifest = read_manifest(opts.checkpoint)
    # "auto" resolved here, so that the report names the format that produced it
    opts = replace(opts, precision=resolve_precision(opts.precision, torch.device("cpu")))
    nowcaster = Nowcaster.from_checkpoint(opts.checkpoint, precision=opts.precision)
    options = nowcaster.options(**{name: getattr(opts, name) for name in OPTIONS if name != "thresholds"})
    if options.members < 2:
        raise ValueError(f"members must be >= 2 for ensemble scores, got {options.members}")
    config, transform = nowcaster.config, nowcaster.config.transform
    cell_km = nowcaster.defaults.cell_km or 4.0
    thresholds = [threshold_to_mmh(v, "mm/h", transform)
                  for v in sorted(set(opts.thresholds) | set(REPORT_THRESHOLDS_MMH))]
    if opts.paper_thresholds != "none":
        thresholds += [threshold_to_mmh(v, "pixel255", transform)
                       for v in PAPER_THRESHOLDS_255[opts.paper_thresholds]]
    windows = checkpoint_windows(manifest, nowcaster, "test", split_from=opts.split_from, events=opts.events,
                                 allow_training_data=opts.allow_training_data, max_windows=opts.max_windows)
    if not windows:
        raise ValueError("no held-out window passed the coverage and rain rules")
    log.info("%d windows in %s, %d members, options %s", len(windows),
             sorted({group_name(w) for w in windows}), options.members, options)
    groups, seconds = score_windows(nowcaster, windows, options, methods=methods, thresholds=thresholds,
                                    seed=opts.seed)
    t_out = config.t_out
    median = {m: statistics.median(s[1:] if len(s) >= 3 else s) if s else float("nan")
              for m, s in seconds.items()}
    timing: dict[str, object] = {f"{m}_seconds_per_ensemble": v for m, v in median.items()}
    timing["ratio_stldm_over_steps"] = median["stldm"] / median["steps"]
    timing.update(members=options.members, lead_times=t_out, windows_timed=len(windows),
                  torch_threads=torch.get_num_threads(), per_window_seconds=seconds)
    common = {
        "checkpoint": str(opts.checkpoint), "model_version": manifest.get("model_version"),
        "options": jsonable(asdict(opts)), "nowcast_options": jsonable(asdict(options)),
        "methods": list(methods), "cell_km": cell_km, "members": options.members,
        "resampling": "none (each network at every step it is served at, from its native frames)",
        "pools": list(POOLS), "fss_scales_cells": list(FSS_SCALES),
        "thresholds": [{"label": t.label, "mmh": t.mmh} for t in thresholds],
        "lpips": perceptual["lpips"], "fvd": perceptual["fvd"], "timing": jsonable(timing),
    }
    results = {name: {**common, "group": name, "step_minutes": g["step"],
                      "lead_minutes": [(k + 1) * g["step"] for k in range(t_out)], "windows": g["windows"],
                      "scores": {m: sc.to_dict() for m, sc in g["scores"].items()}}
               for name, g in sorted(groups.items())}
    result = {**common, "groups": results, "summary": summary(results)}
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "scores.json").write_text(json.dumps(result, indent=1) + "\n")
    sections = []
    report_timing = {k: float("nan") if v is None else v for k, v in common["timing"].items()}
    for name, group_result in results.items():
        plots = []
        if opts.plots:
            from verification.plots import write_plots

            folder = opts.out / name.replace(" ", "").replace("@", "_")
            folder.mkdir(parents=True, exist_ok=True)
            plots = [f"{folder.name}/{p}" for p in write_plots(group_result, groups[name]["case"], folder)]
        sections.append(markdown_report({**group_result, "timing": report_timing}, plots))
    (opts.out / "report.md").write_text(summary_markdown(result) + "\n\n" + "\n\n".join(sections))
    log.info("wrote %s", opts.out)
    return result


def _at(values: list, lead_minutes: list[int], minutes: int):
    return values[lead_minutes.index(minutes)] if minutes in lead_minutes else None


def summary(results: dict) -> dict:
    """Per group and method, the issue's criteria at 30 and 60 min: member CSI at 1 mm/h, fair
    CRPS, Brier score at 1 mm/h and spread/skill (None where the windows lack that lead)."""
    out: dict = {}
    for name, r in results.items():
        leads = r["lead_minutes"]
        one = [t["mmh"] for t in r["thresholds"]].index(1.0)
        out[name] = {}
        for method, s in r["scores"].items():
            row = {}
            for minutes in (30, 60):
                row[f"csi_1mmh_{minutes}"] = _at(s["csi"][0][one], leads, minutes)
                row[f"crps_{minutes}"] = _at(s["crps"], leads, minutes)
                row[f"brier_1mmh_{minutes}"] = _at(s["brier"][one], leads, minutes)
                if "spread_skill_ratio" in s:
                    row[f"spread_skill_{minutes}"] = _at(s["spread_skill_ratio"], leads, minutes)
            out[name][method] = row
    return out


def summary_markdown(result: dict) -> str:
    """The summary table of every group (the issue's criteria at 30 and 60 minutes)."""
    head = ["group", "method"] + [f"{k} @{m}" for k in ("CSI 1", "CRPS", "Brier 1", "spread/skill")
                                  for m in (30, 60)]
    rows = []
    for name, methods in result["summary"].items():
        for method, row in methods.items():
            cells = [row.get(f"{k}_{m}") for k in ("csi_1mmh", "crps", "brier_1mmh", "spread_skill")
                     for m in (30, 60)]
            rows.append([name, method] + ["" if v is None else f"{v:.4f}" if abs(v) < 0.1 else f"{v:.3f}"
                                          for v in cells])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    precision = result["options"].get("precision", "float32")
    return (f"# Held-out verification of {result['model_version']}\n\nOptions: {result['nowcast_options']}; "
            f"denoiser in {precision}."
            f" Member CSI counts every member; CRPS is the fair ensemble CRPS in mm/h; Brier at 1 mm/h; "
            f"spread/skill is the ensemble spread over the RMSE of the ensemble mean.\n\n"
            + "\n".join(lines))


def add_evaluate_parser(sub) -> None:
    """Register ``nowcast evaluate`` on the ``nowcast`` subparsers ``sub``."""
    defaults = EvaluateOptions(checkpoint=Path("checkpoints/default"))
    p = sub.add_parser("evaluate", help="verify a checkpoint against pysteps on held-out radar windows")
    p.add_argument("--checkpoint", type=Path, default=defaults.checkpoint)
    p.add_argument("--events", type=Path, nargs="+", default=[],
                   help="only the held-out windows of these files (default: all of the split's files)")
    p.add_argument("--split-from", type=Path, default=None,
                   help="use this checkpoint's split rule and files (default: the evaluated checkpoint's)")
    p.add_argument("--members", type=int, default=None, help="ensemble size (default: the checkpoint's)")
    p.add_argument("--max-windows", type=int, default=None,
                   help="score about this many windows, evenly spaced over the split")
    p.add_argument("--out", type=Path, default=defaults.out)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--thresholds", type=float, nargs="+", default=list(defaults.thresholds),
                   help="rain-rate thresholds in mm/h (1 and 5 are always scored)")
    p.add_argument("--paper-thresholds", choices=(*PAPER_THRESHOLDS_255, "none"),
                   default=defaults.paper_thresholds, help="also score the paper's 0-255 thresholds")
    p.add_argument("--matching", choices=MATCHINGS, default=None, help="default: the checkpoint's")
    p.add_argument("--advection", choices=ADVECTIONS, default=None, help="default: the checkpoint's")
    p.add_argument("--motion-spread", type=float, default=None, help="default: the checkpoint's")
    p.add_argument("--detail-lifetime", type=float, default=None,
                   help="minutes over which the input's detail the VAE does not reproduce fades from "
                   "the members, 0: none (default: the checkpoint's)")
    p.add_argument("--detail", choices=DETAILS, default=None,
                   help="how that detail enters the members: fade (the same in every member) or renew "
                   "(each member's own, renewed with noise) (default: the checkpoint's)")
    p.add_argument("--extrapolation-lifetime", type=float, default=None,
                   help="minutes over which the members go from the extrapolated last frame to the "
                   "model's forecast, 0: the model's alone (default: the checkpoint's)")
    p.add_argument("--blend-spread", type=float, default=None,
                   help="how much of the members' own spread that blend keeps, 0-1 (0: 1 - w; default: "
                   "the checkpoint's)")
    p.add_argument("--estimate-lifetime", type=float, default=None,
                   help="minutes over which that blend's target goes from the last frame to the model's "
                   "first estimate, 0: the last frame (default: the checkpoint's)")
    p.add_argument("--antithetic", action=argparse.BooleanOptionalAction, default=None,
                   help="members in mirrored pairs, or (--no-antithetic) each with its own draws "
                   "(default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="default: the checkpoint's")
    p.add_argument("--guidance-share", type=float, default=None,
                   help="share of the DDIM steps, the noisiest first, that apply guidance (default: the "
                   "checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's)")
    p.add_argument("--allow-training-data", action="store_true",
                   help="with --split-from: score files that gave the checkpoint training/validation windows")
    p.add_argument("--lpips-weights", type=Path, default=None, help="LPIPS network weights (else skipped)")
    p.add_argument("--fvd-weights", type=Path, default=None, help="FVD (I3D) weights (else skipped)")
    p.add_argument("--threads", type=int, default=defaults.threads,
                   help="torch CPU threads (1: the same resources as STEPS' single worker)")
    p.add_argument("--methods", type=methods_argument, default=METHODS,
                   help=f"comma list of the methods to run and score (default: all, {','.join(METHODS)}); "
                   "e.g. stldm,persistence skips the slow pysteps baselines")
    p.add_argument("--precision", choices=PRECISION_SETTINGS, default=defaults.precision,
                   help="the denoiser's number format (bfloat16: faster on CPUs with AVX512-BF16 or AMX; "
                   "auto, the worker's default: bfloat16 where the CPU runs it natively)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    """The ``nowcast evaluate`` command: run :func:`evaluate` and log where the report is."""
    opts = EvaluateOptions(
        checkpoint=args.checkpoint, events=tuple(args.events), split_from=args.split_from,
        members=args.members,
        max_windows=args.max_windows, out=args.out, seed=args.seed, thresholds=tuple(args.thresholds),
        paper_thresholds=args.paper_thresholds, matching=args.matching, advection=args.advection,
        motion_spread=args.motion_spread, detail_lifetime=args.detail_lifetime, detail=args.detail,
        extrapolation_lifetime=args.extrapolation_lifetime, blend_spread=args.blend_spread,
        estimate_lifetime=args.estimate_lifetime, antithetic=args.antithetic, guidance=args.guidance,
        guidance_share=args.guidance_share, steps=args.steps,
        allow_training_data=args.allow_training_data, lpips_weights=args.lpips_weights,
        fvd_weights=args.fvd_weights, plots=not args.no_plots, threads=args.threads, methods=args.methods,
        precision=args.precision)
    evaluate(opts)
    log.info("report: %s", opts.out / "report.md")
    return 0
