"""The ``nowcast`` command line: forecast, import-official, bench, train."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.options import PRECISIONS

log = logging.getLogger("nowcast")

DEFAULT_CHECKPOINT = Path("checkpoints/default")


def load_nowcaster(checkpoint: Path | None, preset: str):
    """The :class:`~model.nowcast.Nowcaster` of ``checkpoint`` (default checkpoints/default), or
    of an untrained ``preset`` model when there is no checkpoint (with a warning)."""
    import torch

    from model.config import STLDMConfig
    from model.nowcast import Nowcaster
    from model.options import NowcastDefaults
    from model.stldm import STLDM

    if checkpoint is not None or DEFAULT_CHECKPOINT.is_dir():
        return Nowcaster.from_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
    log.warning("no checkpoint given and %s does not exist: using an UNTRAINED %r model; "
                "its output shows the pipeline, not a forecast", DEFAULT_CHECKPOINT, preset)
    torch.manual_seed(0)
    model = STLDM(STLDMConfig.preset_named(preset)).eval()
    defaults = NowcastDefaults(step_minutes=model.config.step_minutes or (5,), cell_km=None)
    return Nowcaster(model, defaults, model_version=f"untrained-{preset}")


def cmd_forecast(args: argparse.Namespace) -> int:
    import numpy as np

    from model.grid import Grid
    from radar.cf import nowcast_dataset, write_netcdf
    from radar.read import cut_window
    from radar.readers import last_frames, read_radar, sequence_cell_km

    nowcaster = load_nowcaster(args.checkpoint, args.preset)
    config = nowcaster.config
    defaults = nowcaster.defaults
    seq, coarsen = last_frames(read_radar(args.input), t_in=config.t_in, steps=defaults.step_minutes,
                               cell_km=defaults.cell_km, resample=True, coarsen=args.coarsen)
    if args.size and min(seq.values.shape[1:]) > args.size:  # the wettest size x size window
        seq = cut_window(seq, start=0, n_frames=config.t_in, size=args.size)
    times = [np.datetime64(t, "s").astype(object) for t in seq.times]
    grid = Grid(shape=seq.values.shape[1:], cell_km=sequence_cell_km(seq), crs=seq.crs or None,
                y=seq.y, x=seq.x)
    nowcast = nowcaster.nowcast(seq.values, unit=seq.unit, timestamps=times, grid=grid, members=args.members,
                                steps=args.steps, guidance=args.guidance, seed=args.seed,
                                matching=args.matching, advection=args.advection)
    resampled = {"resampled": f"area mean of {coarsen} x {coarsen} input cells"} if coarsen > 1 else {}
    ds = nowcast_dataset(nowcast, history=f"input {seq.source}", attrs={
        "zr_relation": f"Z = {config.transform.zr_a:g} R^{config.transform.zr_b:g}",
        "precip_threshold_mm_h": float(config.transform.rain_min), **resampled})
    write_netcdf(ds, args.output)
    prob = nowcast.probability[list(nowcast.thresholds).index(1.0)] if 1.0 in nowcast.thresholds else None
    print(f"{seq.source}: {config.t_in} frames up to {seq.times[-1]} at {nowcast.step_minutes} min, "
          f"{'x'.join(map(str, seq.values.shape[1:]))} cells of {grid.cell_km or float('nan'):.2f} km, model "
          f"{nowcast.model_version} ({nowcast.options.advection} frame, matching {nowcast.options.matching})")
    print(f"{'lead':>6s} {'mean mm/h':>10s} {'max mean':>9s} {'area P(>=1mm/h)>0.5':>20s}")
    for i in range(0, len(nowcast.lead_minutes), max(1, len(nowcast.lead_minutes) // 5)):
        mean = nowcast.mean[i]
        area = "" if prob is None else f"{float(np.nanmean(prob[i] > 0.5)):20.1%}"
        print(f"{int(nowcast.lead_minutes[i]):4d} m {float(np.nanmean(mean)):10.3f} "
              f"{float(np.nanmax(mean)):9.2f} {area}")
    print(f"wrote {args.output}")
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    from model.checkpoint import save_checkpoint
    from model.config import STLDMConfig
    from model.official import convert_state_dict, read_state_dict
    from model.stldm import STLDM

    config = STLDMConfig.paper(t_in=args.t_in, t_out=args.t_out, size=args.size)
    state = convert_state_dict(read_state_dict(args.state_dict), config)
    model = STLDM(config)
    model.load_state_dict(state, strict=True)
    save_checkpoint(model, args.out_dir, model_version=args.model_version,
                    extra={"source": f"official STLDM weights from {Path(args.state_dict).name}"})
    print(f"wrote {args.out_dir} ({model.num_parameters():,} parameters)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from verification.bench import DEFAULT_EVENT, run_bench

    for line in run_bench(presets=args.presets, members=args.members, repeats=args.repeats,
                          event=args.event or DEFAULT_EVENT, with_pysteps=not args.no_pysteps,
                          threads=args.threads, compose_paper_on_cpu=not args.full,
                          precisions=args.precision, checkpoint=args.checkpoint):
        print(line, flush=True)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import main as train_main

    return train_main(args.train_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nowcast", description="STLDM precipitation nowcasting")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("forecast",
                       help="ensemble nowcast of radar files (CF-netCDF, ODIM_H5, GRIB2, GeoTIFF)")
    p.add_argument("--input", type=Path, nargs="+", required=True,
                   help="radar file(s) holding the last frames, e.g. ../shared/radar/events/fmi_20160928.nc "
                   "or one ODIM_H5 composite per time (radar/readers.py)")
    p.add_argument("--checkpoint", type=Path, help=f"checkpoint folder (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--preset", default="small", help="untrained preset when there is no checkpoint")
    p.add_argument("--coarsen", type=int, default=None,
                   help="area-mean this many cells per side (default: as many as bring the cells near the "
                   "model's cell size, GET /v1/model cell_km)")
    p.add_argument("--size", type=int, default=128,
                   help="forecast the wettest size x size window of the grid (0: the whole grid)")
    p.add_argument("--members", type=int, default=None, help="ensemble size (default: the checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matching", choices=("cdf", "none"), default=None,
                   help="probability-match members to the last frame (cdf) or keep them raw "
                   "(default: the checkpoint's)")
    p.add_argument("--advection", choices=("dense", "bulk", "none"), default=None,
                   help="forecast in the frame moving with the rain's motion field (dense, "
                   "model/lagrangian.py), with one velocity (bulk) or on the ground (none, as the paper); "
                   "default: the checkpoint's")
    p.add_argument("--output", type=Path, default=Path("out/nowcast.nc"))
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("import-official", help="convert the authors' state dict to a checkpoint")
    p.add_argument("state_dict", type=Path, help=".pt/.pth/.ckpt (weights only) or .safetensors")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--t-in", type=int, default=5)
    p.add_argument("--t-out", type=int, default=20)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--model-version", default=None)
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("bench", help="seconds per 10-member ensemble and GFLOP/s")
    p.add_argument("--presets", nargs="*", default=["small", "paper"],
                   help="untrained presets timed at 20 DDIM steps with guidance (none: only --checkpoint)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="also time a worker's whole nowcast with this checkpoint and its defaults")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--event", type=Path, default=None, help="radar event file for the input")
    p.add_argument("--no-pysteps", action="store_true", help="skip the pysteps STEPS timing")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1, as a service worker; the paper target is at 2)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None,
                   help="the denoiser's number formats on the CPU (model.precision; default: float32, "
                   "and bfloat16 where the CPU has native bfloat16 kernels)")
    p.add_argument("--full", action="store_true",
                   help="time the paper preset on the CPU as a full 20-step run, not composed from one step")
    p.set_defaults(func=cmd_bench)

    # The training flags live with TrainConfig (training/config.py); they are parsed there so
    # that the other commands never import training. `nowcast train --help` lists them.
    p = sub.add_parser("train", add_help=False, help="train or fine-tune a model (see train --help)")
    p.set_defaults(func=cmd_train)

    # The service commands' flags live with them (service/serve.py, service/cli.py); both
    # modules import only the standard library until their command runs.
    from service.bench import add_bench_service_parser
    from service.cli import add_submit_parser
    from service.serve import add_serve_parser

    add_serve_parser(sub)
    add_submit_parser(sub)
    add_bench_service_parser(sub)

    from verification.evaluate import add_evaluate_parser  # verification against pysteps

    add_evaluate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.train_args = rest
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ValueError as err:  # bad input or checkpoint: a clear message, no traceback
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
