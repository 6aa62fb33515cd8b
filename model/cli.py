"""The ``nowcast`` command line: forecast, import-official, bench, train."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("nowcast")

DEFAULT_CHECKPOINT = Path("checkpoints/default")


def cmd_forecast(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from model.checkpoint import load_checkpoint
    from model.config import STLDMConfig
    from model.products import ensemble_dataset
    from model.stldm import STLDM
    from radar.read import cut_window, read_event

    if args.checkpoint is not None or DEFAULT_CHECKPOINT.is_dir():
        model = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT)
        version = model.model_version
    else:
        log.warning("no checkpoint given and %s does not exist: using an UNTRAINED %r model; "
                    "its output shows the pipeline, not a forecast", DEFAULT_CHECKPOINT, args.preset)
        torch.manual_seed(0)
        model = STLDM(STLDMConfig.preset_named(args.preset)).eval()
        version = f"untrained-{args.preset}"
    config = model.config
    seq = cut_window(read_event(args.input), start=args.start, n_frames=config.t_in,
                     size=config.size, coarsen=args.coarsen)
    pixels = config.transform.to_pixel(np.nan_to_num(seq.values, nan=0.0), "mm/h")
    result = model.forecast(torch.from_numpy(pixels)[None], members=args.members,
                            steps=args.steps, guidance=args.guidance, seed=args.seed,
                            matching=args.matching, advection=args.advection)
    members = config.transform.from_pixel(result.members[0].numpy(), "mm/h")
    ds = ensemble_dataset(members, timestep_minutes=seq.timestep_minutes,
                          reference_time=seq.times[-1], model_version=version)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(args.output, encoding={v: {"zlib": True} for v in ds.data_vars})
    prob = ds["probability_of_lwe_precipitation_rate_above_threshold"].sel(threshold=1.0)
    print(f"{seq.source}: {config.t_in} frames up to {seq.times[-1]}, model {version}")
    print(f"{'lead':>6s} {'mean mm/h':>10s} {'max mean':>9s} {'area P(>=1mm/h)>0.5':>20s}")
    for i in range(0, config.t_out, max(1, config.t_out // 5)):
        lead = int(ds.forecast_period[i]) // 60
        mean = ds["precipitation_rate_mean"][i]
        print(f"{lead:4d} m {float(mean.mean()):10.3f} {float(mean.max()):9.2f} "
              f"{float((prob[i] > 0.5).mean()):20.1%}")
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
    from model.bench import DEFAULT_EVENT, run_bench

    for line in run_bench(presets=args.presets, members=args.members, repeats=args.repeats,
                          event=args.event or DEFAULT_EVENT, with_pysteps=not args.no_pysteps,
                          threads=args.threads):
        print(line, flush=True)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import main as train_main

    return train_main(args.train_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nowcast", description="STLDM precipitation nowcasting")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("forecast", help="ensemble nowcast of a radar event file (CF-netCDF)")
    p.add_argument("--input", type=Path, required=True,
                   help="event file, e.g. ../shared/radar/events/fmi_20160928.nc")
    p.add_argument("--checkpoint", type=Path, help=f"checkpoint folder (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--preset", default="small", help="untrained preset when there is no checkpoint")
    p.add_argument("--start", type=int, default=0, help="index of the first input frame")
    p.add_argument("--coarsen", type=int, default=4, help="area-mean this many cells per side")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matching", choices=("cdf", "none"), default="cdf",
                   help="probability-match members to the last frame (cdf) or keep them raw")
    p.add_argument("--advection", choices=("bulk", "none"), default="bulk",
                   help="forecast in a frame moving with the rain (bulk, model/advection.py) or on "
                   "the ground (none, as the paper)")
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
    p.add_argument("--presets", nargs="+", default=["small", "paper"])
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--event", type=Path, default=None, help="radar event file for the input")
    p.add_argument("--no-pysteps", action="store_true", help="skip the pysteps STEPS timing")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1, as a service worker; the paper target is at 2)")
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

    from model.evaluate import add_evaluate_parser  # verification against pysteps

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
