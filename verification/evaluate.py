"""``nowcast evaluate``: verify a checkpoint against pysteps on held-out radar events.

Every method forecasts the same windows from the same inputs and is scored on the same
cells, in mm/h:

- ``stldm``: the STLDM ensemble (``model.forecast``, seed ``seed + window``, probability
  matching and bulk advection as the service delivers it unless ``matching="none"`` or
  ``advection="none"``);
- ``stldm_first_estimate``: the translator's decoded first estimate of the same call;
- ``persistence``: the last input frame;
- ``extrapolation``: pysteps Lucas-Kanade motion + semi-Lagrangian advection;
- ``steps``: the pysteps STEPS ensemble with as many members, seed ``seed + window``.

``methods`` (``--methods stldm,persistence``) scores a subset; a method left out is not run at
all (so leaving out ``extrapolation`` and ``steps`` skips pysteps, the slow part on a CPU). Its
timing is then None in ``scores.json`` ("nan" in the report) and ``case.png`` needs both
``stldm`` and ``steps``.

Held-out data
    Files that the checkpoint's manifest lists with training or validation windows are
    refused unless ``allow_training_data``; the default model (FMI + KNMI) never saw the
    MRMS events (listed in its data, but skipped: their 2-min step does not divide 5 min).

Time step
    Events are read, area-averaged to the model's ``cell_km`` (``radar.events``) and
    resampled to the model's step by linear interpolation in time (in mm/h) between the two
    neighbouring native frames; a cell is no data when either neighbour is. With a 2-min
    native step and a 5-min model step, every other 5-min frame (5, 15, 25, ... min) is the
    mean of two native frames, which smooths moving cells a little in the inputs and the
    truth alike. A native step that divides the model step is plain subsampling.

Windows
    ``t_in`` input frames plus as many lead times as every event holds (at most ``t_out``;
    70-min MRMS events at 5 min give 10 lead times, 50 min) on ``size x size`` tiles
    (``radar.windows``: tiles centred in the grid, kept when at least ``min_coverage`` of
    the cells have data). Windows with less than ``min_rain_fraction`` of rainy input cells
    are dropped (nothing to verify); the rest are ranked by that fraction, the wettest
    ``max_windows`` kept. The selection looks at the inputs only, never at the truth.

Scoring
    Cells where the truth has no data are left out. NaN in a forecast (pysteps advects
    no-data in from outside the domain) counts as 0 mm/h; the fraction so filled is recorded.
    SSIM is computed on model pixels (data range 1, the paper's convention), all other scores
    on mm/h. Timing: wall seconds of each STLDM ensemble call and each STEPS call (both 20
    lead times, the same members and input), median over the windows after the first; torch
    runs on ``threads`` CPU threads (default 1, as STEPS runs with one worker).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model.advection import ADVECTIONS
from model.transform import PixelTransform
from verification.ensemble_metrics import (
    CRPSAccumulator,
    ProbabilityAccumulator,
    RankHistogram,
    SpreadSkillAccumulator,
)
from verification.metrics import (
    PAPER_THRESHOLDS_255,
    ContingencyAccumulator,
    ErrorAccumulator,
    FSSAccumulator,
    SSIMAccumulator,
    Threshold,
    threshold_to_mmh,
)
from verification.report import REPORT_THRESHOLDS_MMH, markdown_report

log = logging.getLogger(__name__)

METHODS = ("stldm", "stldm_first_estimate", "persistence", "extrapolation", "steps")
ENSEMBLES = ("stldm", "steps")
POOLS = (1, 4, 16)
FSS_SCALES = (1, 5, 17)  # cells: 4, 20 and 68 km at 4 km


@dataclass(frozen=True)
class EvaluateOptions:
    """Arguments of :func:`evaluate`; names match the command-line flags."""

    checkpoint: Path
    events: tuple[Path, ...]
    members: int = 10
    max_windows: int | None = None
    out: Path = Path("out/evaluate")
    step_minutes: int | None = None  # default: the checkpoint's training step
    seed: int = 0
    thresholds: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)  # mm/h
    paper_thresholds: str = "hko7"
    min_rain_fraction: float = 0.05
    matching: str = "cdf"
    advection: str = "bulk"
    steps: int = 20
    allow_training_data: bool = False
    lpips_weights: Path | None = None
    fvd_weights: Path | None = None
    plots: bool = True
    threads: int = 1  # torch CPU threads; 1 matches STEPS' single worker (equal resources)
    methods: tuple[str, ...] = METHODS


@dataclass(eq=False)
class Window:
    """One evaluation case: ``values`` (t_in + n_leads, size, size) mm/h, NaN = no data."""

    source: str
    start: str
    y0: int
    x0: int
    rain_fraction: float
    values: np.ndarray = field(repr=False)


def resample_linear(values: np.ndarray, times: np.ndarray,
                    step_minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample frames to ``step_minutes`` by linear interpolation in time.

    Parameters
    ----------
    values : np.ndarray
        (T, H, W) float32 rain rate in mm/h, NaN = no data, at a regular native step.
    times : np.ndarray
        (T,) datetime64, strictly increasing and regular.
    step_minutes : int

    Returns
    -------
    values, times
        (T', H, W) float32 frames at ``times[0] + k * step_minutes`` up to ``times[-1]``;
        NaN where either neighbouring native frame is NaN (except at exact native times).
    """
    minutes = (times - times[0]) / np.timedelta64(1, "m")
    steps = np.diff(minutes)
    if len(minutes) < 2 or np.any(np.abs(steps - steps[0]) > 1e-6) or steps[0] <= 0:
        raise ValueError("resampling needs at least 2 frames at one regular time step")
    targets = np.arange(0.0, minutes[-1] + 1e-6, float(step_minutes))
    out = np.empty((len(targets), *values.shape[1:]), dtype=np.float32)
    for n, target in enumerate(targets):
        i = min(int(np.searchsorted(minutes, target + 1e-6, side="right")) - 1, len(minutes) - 2)
        w = (target - minutes[i]) / steps[0]
        if w < 1e-6:
            out[n] = values[i]
        elif w > 1 - 1e-6:
            out[n] = values[i + 1]
        else:
            out[n] = (1.0 - w) * values[i] + w * values[i + 1]
    return out, times[0] + (targets * 60e9).astype("timedelta64[ns]")


def training_files(manifest: dict) -> set[str]:
    """File names that gave training or validation windows to the checkpoint."""
    per_file = manifest.get("training", {}).get("data", {}).get("windows_per_file", {})
    return {name for split in per_file.values() for name, n in split.items() if n > 0}


def event_windows(path: Path, *, t_in: int, n_frames: int | None, size: int, cell_km: float,
                  step_minutes: int, transform: PixelTransform, min_coverage: float,
                  min_rain_fraction: float) -> list[Window]:
    """Windows of one event file (see the module docstring), wettest inputs first."""
    from radar.events import coarsen_factor, coarsen_values, read_header
    from radar.read import read_event
    from radar.windows import candidate_windows

    header = read_header(path)
    coarsen = coarsen_factor(header.native_km, cell_km, source=header.source)
    seq = read_event(path, quantity=header.quantity)
    values = coarsen_values(seq.values, coarsen, seq.unit)
    if seq.unit == "dBZ":
        values = transform.dbz_to_rain(values)
    values, times = resample_linear(values, seq.times, step_minutes)
    n_frames = n_frames or len(values)
    valid = np.isfinite(values)
    rain = np.nan_to_num(values, nan=0.0)
    table = candidate_windows(rain, valid, n_frames=n_frames, frame_stride=1, size=size, stride=size,
                              min_coverage=min_coverage, min_rain_fraction=0.0,
                              rain_pixel=transform.rain_min)
    windows = []
    for start, y0, x0 in table:
        cut = values[start : start + n_frames, y0 : y0 + size, x0 : x0 + size]
        inputs = cut[:t_in]
        fraction = float((inputs >= transform.rain_min).sum() / max(np.isfinite(inputs).sum(), 1))
        if fraction >= min_rain_fraction:
            windows.append(Window(header.source, f"{np.datetime_as_string(times[start], unit='s')}Z",
                                  int(y0), int(x0), fraction, np.ascontiguousarray(cut)))
    log.info("%s: %d windows of %d frames (%d with >= %.0f%% rainy input cells)", header.source,
             len(table), n_frames, len(windows), 100 * min_rain_fraction)
    return windows


class MethodScores:
    """All accumulators of one method (ensemble scores only for ensembles)."""

    def __init__(self, thresholds: list[Threshold], n_leads: int, n_members: int, ensemble: bool,
                 seed: int) -> None:
        self.contingency = ContingencyAccumulator(thresholds, n_leads, pools=POOLS)
        self.fss = FSSAccumulator(thresholds, n_leads, scales=FSS_SCALES)
        self.errors = ErrorAccumulator(n_leads)
        self.ssim = SSIMAccumulator(n_leads, data_range=1.0)
        self.crps = CRPSAccumulator(n_leads)
        self.prob = ProbabilityAccumulator(thresholds, n_leads, n_levels=n_members + 1)
        self.rank = RankHistogram(n_members, n_leads, seed=seed) if ensemble else None
        self.spread = SpreadSkillAccumulator(n_leads) if ensemble else None
        self.nan_filled, self.cells = 0, 0

    def add(self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray,
            transform: PixelTransform) -> None:
        """forecast (K, T, H, W) mm/h (NaN = 0), truth (T, H, W) mm/h, valid (T, H, W)."""
        self.nan_filled += int(np.isnan(forecast).sum())
        self.cells += forecast.size
        forecast = np.nan_to_num(forecast, nan=0.0)
        for acc in (self.contingency, self.fss, self.errors, self.crps, self.prob, self.rank, self.spread):
            if acc is not None:
                acc.add(forecast, truth, valid)
        self.ssim.add(transform.to_pixel(forecast, "mm/h"), transform.to_pixel(truth, "mm/h"), valid)

    def to_dict(self) -> dict:
        """Per lead and over all leads (counts summed first), NaN as None."""
        out: dict = {}
        for suffix, over in (("", False), ("_all_leads", True)):
            out.update({f"{k}{suffix}": v for k, v in self.contingency.scores(over_leads=over).items()})
            out[f"fss{suffix}"] = self.fss.scores(over_leads=over)
            out.update({f"{k}{suffix}": v for k, v in self.errors.scores(over_leads=over).items()})
            out[f"ssim{suffix}"] = self.ssim.scores(over_leads=over)
            out[f"crps{suffix}"] = self.crps.scores(over_leads=over)
            out.update({f"{k}{suffix}": v for k, v in self.prob.scores(over_leads=over).items()})
            if self.spread is not None:
                out.update({f"spread_skill_{k}{suffix}": v
                            for k, v in self.spread.scores(over_leads=over).items()})
        out["reliability"] = self.prob.reliability()
        if self.rank is not None:
            out["rank_histogram"] = self.rank.scores()
        out["nan_filled_fraction"] = self.nan_filled / max(self.cells, 1)
        return jsonable(out)


def jsonable(x):
    """numpy arrays and scalars -> lists and floats, NaN -> None."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, float | np.floating):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


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


def evaluate(opts: EvaluateOptions) -> dict:
    """Run the evaluation and write ``scores.json``, ``report.md`` and plots under ``opts.out``."""
    import torch
    from tqdm import tqdm

    from model.checkpoint import load_checkpoint, read_manifest
    from verification.baselines import extrapolation_nowcast, steps_nowcast

    methods = parse_methods(opts.methods)
    if opts.members < 2:
        raise ValueError(f"members must be >= 2 for ensemble scores, got {opts.members}")
    if opts.paper_thresholds not in (*PAPER_THRESHOLDS_255, "none"):
        raise ValueError(f"paper_thresholds must be one of {(*PAPER_THRESHOLDS_255, 'none')}")
    perceptual = {name: perceptual_status(name, w)
                  for name, w in (("lpips", opts.lpips_weights), ("fvd", opts.fvd_weights))}
    manifest = read_manifest(opts.checkpoint)
    if opts.threads < 1:
        raise ValueError(f"threads must be >= 1, got {opts.threads}")
    torch.set_num_threads(opts.threads)
    model = load_checkpoint(opts.checkpoint)
    config, transform = model.config, model.config.transform
    train_cfg = manifest.get("training", {}).get("config", {})
    step = opts.step_minutes or int(train_cfg.get("step_minutes", 5))
    cell_km = float(train_cfg.get("cell_km", 4.0))
    used = training_files(manifest)
    for path in opts.events:
        if path.name in used and not opts.allow_training_data:
            raise ValueError(f"{path.name} gave training/validation windows to {opts.checkpoint} "
                             "(manifest); pass held-out events or --allow-training-data")
    thresholds = [threshold_to_mmh(v, "mm/h", transform)
                  for v in sorted(set(opts.thresholds) | set(REPORT_THRESHOLDS_MMH))]
    if opts.paper_thresholds != "none":
        thresholds += [threshold_to_mmh(v, "pixel255", transform)
                       for v in PAPER_THRESHOLDS_255[opts.paper_thresholds]]
    min_coverage = float(train_cfg.get("min_coverage", 0.5))
    per_event = [event_windows(p, t_in=config.t_in, n_frames=None, size=config.size, cell_km=cell_km,
                               step_minutes=step, transform=transform, min_coverage=min_coverage,
                               min_rain_fraction=opts.min_rain_fraction) for p in opts.events]
    frames = [w.values.shape[0] for ws in per_event for w in ws]
    if not frames:
        raise ValueError("no window passed the coverage and rain rules in the given events")
    n_leads = min(config.t_out, min(frames) - config.t_in)
    if n_leads < 1:
        raise ValueError(f"events are too short for {config.t_in} inputs at {step} min")
    windows = sorted((w for ws in per_event for w in ws), key=lambda w: -w.rain_fraction)
    windows = windows[: opts.max_windows] if opts.max_windows else windows
    leads = [(i + 1) * step for i in range(n_leads)]
    log.info("%d windows, %d lead times (%d-%d min), %d members", len(windows), n_leads, leads[0],
             leads[-1], opts.members)

    scores = {m: MethodScores(thresholds, n_leads, opts.members if m in ENSEMBLES else 1,
                              m in ENSEMBLES, opts.seed) for m in methods}
    seconds: dict[str, list[float]] = {"stldm": [], "steps": []}
    run_stldm = bool({"stldm", "stldm_first_estimate"} & set(methods))
    case = None
    for i, win in enumerate(tqdm(windows, desc="evaluate", unit="window")):
        x, truth = win.values[: config.t_in], win.values[config.t_in : config.t_in + n_leads]
        valid = np.isfinite(truth)
        pixels = torch.from_numpy(transform.to_pixel(np.nan_to_num(x, nan=0.0), "mm/h"))[None]
        forecasts = {}
        if run_stldm:
            start = time.perf_counter()
            out = model.forecast(pixels, members=opts.members, steps=opts.steps, seed=opts.seed + i,
                                 matching=opts.matching, advection=opts.advection)
            seconds["stldm"].append(time.perf_counter() - start)
            forecasts["stldm"] = transform.from_pixel(out.members[0, :, :n_leads].numpy(), "mm/h")
            forecasts["stldm_first_estimate"] = transform.from_pixel(
                out.first_estimate[0, None, :n_leads].numpy(), "mm/h")
        if "steps" in methods:
            start = time.perf_counter()
            steps_fc = steps_nowcast(x, n_members=opts.members, n_leadtimes=config.t_out,
                                     timestep_minutes=step, km_per_pixel=cell_km, seed=opts.seed + i)
            seconds["steps"].append(time.perf_counter() - start)
            forecasts["steps"] = steps_fc[:, :n_leads]
        forecasts["persistence"] = np.repeat(np.nan_to_num(x[-1:], nan=0.0)[None], n_leads, axis=1)
        if "extrapolation" in methods:
            forecasts["extrapolation"] = extrapolation_nowcast(x, n_leadtimes=n_leads)[None]
        forecasts = {m: forecasts[m] for m in methods}
        for name, fc in forecasts.items():
            scores[name].add(fc, np.where(valid, truth, 0.0), valid, transform)
        if case is None and {"stldm", "steps"} <= set(methods):
            case = {"window": i, "inputs": x, "truth": truth, **forecasts}

    median = {m: statistics.median(s[1:] if len(s) >= 3 else s) if s else float("nan")
              for m, s in seconds.items()}
    timing: dict[str, object] = {f"{m}_seconds_per_ensemble": v for m, v in median.items()}
    timing["ratio_stldm_over_steps"] = median["stldm"] / median["steps"]
    timing.update(members=opts.members, lead_times=config.t_out, windows_timed=len(windows),
                  torch_threads=torch.get_num_threads(), per_window_seconds=seconds)
    result = {
        "checkpoint": str(opts.checkpoint), "model_version": manifest.get("model_version"),
        "options": jsonable(asdict(opts)),
        "events": [str(p) for p in opts.events], "methods": list(methods),
        "step_minutes": step, "cell_km": cell_km,
        "resampling": "linear interpolation in time between neighbouring native frames",
        "lead_minutes": leads, "members": opts.members, "pools": list(POOLS),
        "fss_scales_cells": list(FSS_SCALES),
        "thresholds": [{"label": t.label, "mmh": t.mmh} for t in thresholds],
        "windows": [{k: v for k, v in vars(w).items() if k != "values"} for w in windows],
        "lpips": perceptual["lpips"], "fvd": perceptual["fvd"], "timing": jsonable(timing),
        "scores": {m: s.to_dict() for m, s in scores.items()},
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "scores.json").write_text(json.dumps(result, indent=1) + "\n")
    plots = []
    if opts.plots:
        from verification.plots import write_plots

        plots = write_plots(result, case, opts.out)
    # the report formats the timing as numbers: a method not run reads "nan" there
    report_timing = {k: float("nan") if v is None else v for k, v in result["timing"].items()}
    (opts.out / "report.md").write_text(markdown_report({**result, "timing": report_timing}, plots))
    log.info("wrote %s", opts.out)
    return result


def add_evaluate_parser(sub) -> None:
    """Register ``nowcast evaluate`` on the ``nowcast`` subparsers ``sub``."""
    defaults = EvaluateOptions(checkpoint=Path("checkpoints/default"), events=())
    p = sub.add_parser("evaluate", help="verify a checkpoint against pysteps on held-out radar events")
    p.add_argument("--checkpoint", type=Path, default=defaults.checkpoint)
    p.add_argument("--events", type=Path, nargs="+", required=True,
                   help="held-out event files, e.g. ../shared/radar/events/mrms_*.nc")
    p.add_argument("--members", type=int, default=defaults.members)
    p.add_argument("--max-windows", type=int, default=None, help="score the N wettest windows")
    p.add_argument("--out", type=Path, default=defaults.out)
    p.add_argument("--step-minutes", type=int, default=None,
                   help="model step (default: the checkpoint's); events are resampled to it")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--thresholds", type=float, nargs="+", default=list(defaults.thresholds),
                   help="rain-rate thresholds in mm/h (1 and 5 are always scored)")
    p.add_argument("--paper-thresholds", choices=(*PAPER_THRESHOLDS_255, "none"),
                   default=defaults.paper_thresholds, help="also score the paper's 0-255 thresholds")
    p.add_argument("--min-rain-fraction", type=float, default=defaults.min_rain_fraction,
                   help="skip windows with fewer rainy input cells")
    p.add_argument("--matching", choices=("cdf", "none"), default=defaults.matching)
    p.add_argument("--advection", choices=ADVECTIONS, default=defaults.advection,
                   help="bulk: forecast in a frame moving with the rain (model/advection.py); "
                   "none: on the ground, as the paper")
    p.add_argument("--steps", type=int, default=defaults.steps, help="DDIM steps")
    p.add_argument("--allow-training-data", action="store_true",
                   help="score files that gave the checkpoint training/validation windows")
    p.add_argument("--lpips-weights", type=Path, default=None, help="LPIPS network weights (else skipped)")
    p.add_argument("--fvd-weights", type=Path, default=None, help="FVD (I3D) weights (else skipped)")
    p.add_argument("--threads", type=int, default=defaults.threads,
                   help="torch CPU threads (1: the same resources as STEPS' single worker)")
    p.add_argument("--methods", type=methods_argument, default=METHODS,
                   help=f"comma list of the methods to run and score (default: all, {','.join(METHODS)}); "
                   "e.g. stldm,persistence skips the slow pysteps baselines")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    """The ``nowcast evaluate`` command: run :func:`evaluate` and log where the report is."""
    opts = EvaluateOptions(
        checkpoint=args.checkpoint, events=tuple(args.events), members=args.members,
        max_windows=args.max_windows, out=args.out, step_minutes=args.step_minutes, seed=args.seed,
        thresholds=tuple(args.thresholds), paper_thresholds=args.paper_thresholds,
        min_rain_fraction=args.min_rain_fraction, matching=args.matching, advection=args.advection,
        steps=args.steps,
        allow_training_data=args.allow_training_data, lpips_weights=args.lpips_weights,
        fvd_weights=args.fvd_weights, plots=not args.no_plots, threads=args.threads,
        methods=args.methods)
    evaluate(opts)
    log.info("report: %s", opts.out / "report.md")
    return 0
