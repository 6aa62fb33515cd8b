"""``make bench-gpu`` (``python -m verification.bench_gpu``): the GPU figures of issue 14 in one run.

On a CUDA device, with untrained weights of each preset (speed does not depend on them):

- seconds per ensemble (10 members, 20 DDIM steps, guidance 1, 5 -> 20 frames of 128 x 128)
  for the ``small`` and ``paper`` presets in float32 and bfloat16 (autocast), and bfloat16
  with the denoiser under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs; its compile
  time is reported apart);
- jobs per second of the worker's forecast call (the small preset as the service runs it:
  float32, probability matching, bulk advection) with 1, 4 and 16 jobs in one batch;
- the peak memory of each (``torch.cuda.max_memory_allocated``).

Lines are printed as they come and everything is written to one JSON file (``--out``). A
failing variant records its error and the run goes on. ``--dry-run`` runs the same code on
the CPU at toy sizes in seconds (the tests do), where the peak is the process's maximum RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.allocator import keep_freed_memory
from model.config import STLDMConfig
from model.stldm import STLDM

log = logging.getLogger("nowcast.bench_gpu")

DEFAULT_OUT = Path("out/bench_gpu.json")
PRESETS = ("small", "paper")
VARIANTS = (("float32", None, False), ("bfloat16", torch.bfloat16, False),
            ("bfloat16", torch.bfloat16, True))  # (name, autocast dtype, CUDA graphs)


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the issue's sizes, or toy ones for ``--dry-run``."""

    t_in: int = 5
    t_out: int = 20
    size: int = 128
    members: int = 10
    steps: int = 20
    batches: tuple[int, ...] = (1, 4, 16)
    repeats: int = 3


DRY_RUN = Sizes(t_in=2, t_out=2, size=64, members=1, steps=1, batches=(1, 2), repeats=1)


@dataclass
class Figure:
    """One measurement: the median seconds over the repeats (after a warm-up) and the peak."""

    name: str
    seconds: float | None = None
    seconds_all: list[float] = field(default_factory=list)
    peak_memory_mb: float | None = None
    compile_seconds: float | None = None
    jobs_per_second: float | None = None
    error: str | None = None


class Device:
    """Synchronisation and peak memory on the device the benchmark runs on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cuda = name.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

    def describe(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name()
        return f"cpu ({torch.get_num_threads()} threads)"


def measure(figure: Figure, fn: Callable[[], Any], device: Device, repeats: int) -> Figure:
    """Time ``fn`` ``repeats`` times after one warm-up (which also compiles, if anything does)."""
    try:
        device.reset_peak()
        start = time.perf_counter()
        fn()
        device.sync()
        warm = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            device.sync()
            start = time.perf_counter()
            fn()
            device.sync()
            times.append(time.perf_counter() - start)
        figure.seconds, figure.seconds_all = statistics.median(times), times
        figure.peak_memory_mb = device.peak_mb()
        if figure.compile_seconds is not None:  # the warm-up compiled: report it apart
            figure.compile_seconds = max(warm - figure.seconds, 0.0)
    except Exception as err:  # one failing variant must not end the run
        log.exception("%s failed", figure.name)
        figure.error = f"{type(err).__name__}: {err}"
    return figure


def build(preset: str, sizes: Sizes, device: Device) -> STLDM:
    torch.manual_seed(0)
    config = STLDMConfig.preset_named(preset, t_in=sizes.t_in, t_out=sizes.t_out, size=sizes.size)
    return STLDM(config).to(device.name).eval()


def inputs(model: STLDM, sizes: Sizes, device: Device, batch: int = 1) -> torch.Tensor:
    """(batch, T_in, size, size) random input frames in [0, 1] on the device."""
    gen = torch.Generator().manual_seed(1)
    return torch.rand(batch, sizes.t_in, sizes.size, sizes.size, generator=gen).to(device.name)


def bench_ensembles(sizes: Sizes, device: Device, *, graphs: bool) -> list[Figure]:
    figures = []
    for preset in PRESETS:
        model = build(preset, sizes, device)
        x = inputs(model, sizes, device)
        step = model.config.step_minutes[0] if model.config.step_minutes else None
        eager_run = model.denoiser.run
        for dtype_name, dtype, with_graphs in VARIANTS:
            if with_graphs and not graphs:
                continue
            name = f"{preset} {dtype_name}" + (" + compile/CUDA graphs" if with_graphs else "")
            figure = Figure(name, compile_seconds=0.0 if with_graphs else None)
            model.denoiser.run = eager_run  # type: ignore[method-assign]
            if with_graphs:
                # static shapes: a second preset would otherwise retrace with symbolic shapes,
                # which takes many minutes; on the CPU (dry run) only dynamo's tracing is tried
                torch._dynamo.reset()
                model.denoiser.run = (  # type: ignore[method-assign]
                    torch.compile(eager_run, mode="reduce-overhead", dynamic=False) if device.cuda
                    else torch.compile(eager_run, backend="eager", dynamic=False))

            def ensemble(model=model, x=x, dtype=dtype, step=step) -> None:
                model.forecast(x, members=sizes.members, steps=sizes.steps, guidance=1.0, seed=0,
                               autocast_dtype=dtype, step_minutes=step)

            figures.append(report(measure(figure, ensemble, device, sizes.repeats)))
        model.denoiser.run = eager_run  # type: ignore[method-assign]
        del model
        if device.cuda:
            torch.cuda.empty_cache()
    return figures


def bench_worker(sizes: Sizes, device: Device) -> list[Figure]:
    """The worker's call (service/worker.py ``Worker._sample``) with its request defaults."""
    model = build("small", sizes, device)
    figures = []
    for batch in sizes.batches:
        x = inputs(model, sizes, device, batch)

        def call(x=x, batch=batch) -> None:
            members = model.forecast(x, members=sizes.members, steps=sizes.steps, guidance=1.0,
                                     seed=list(range(batch)), matching="cdf", advection="bulk").members
            members.float().cpu().numpy()  # the worker post-processes on the host

        figure = measure(Figure(f"worker small float32, {batch} job(s) per batch"), call, device,
                         sizes.repeats)
        if figure.seconds:
            figure.jobs_per_second = batch / figure.seconds
        figures.append(report(figure))
    return figures


def report(figure: Figure) -> Figure:
    if figure.error:
        text = f"FAILED: {figure.error}"
    else:
        text = f"{figure.seconds:8.3f} s"
        if figure.jobs_per_second is not None:
            text += f"  {figure.jobs_per_second:7.2f} jobs/s"
        text += f"  peak {figure.peak_memory_mb:8.0f} MB"
        if figure.compile_seconds is not None:
            text += f"  (compile {figure.compile_seconds:.0f} s)"
    log.info("%-48s %s", figure.name, text)
    return figure


def run(*, dry_run: bool, out: Path, graphs: bool = True) -> dict[str, Any]:
    """Measure and write the JSON report; returns it."""
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run to try it on the CPU")
    keep_freed_memory()
    device = Device("cpu" if dry_run else "cuda")
    if device.cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32
        torch.backends.cudnn.allow_tf32 = False
    sizes = DRY_RUN if dry_run else Sizes()
    log.info("device %s, torch %s; %d members, %d DDIM steps, %d -> %d frames of %d x %d",
             device.describe(), torch.__version__, sizes.members, sizes.steps, sizes.t_in,
             sizes.t_out, sizes.size, sizes.size)
    started = time.perf_counter()
    ensembles = bench_ensembles(sizes, device, graphs=graphs and (device.cuda or dry_run))
    worker = bench_worker(sizes, device)
    result = {
        "device": device.describe(), "torch": torch.__version__, "dry_run": dry_run,
        "sizes": asdict(sizes), "peak_memory": "cuda_max_allocated" if device.cuda else "process_max_rss",
        "ensembles": [asdict(f) for f in ensembles], "worker": [asdict(f) for f in worker],
        "wall_seconds": time.perf_counter() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log.info("wrote %s (%.0f s)", out, result["wall_seconds"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verification.bench_gpu",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU, to try the script")
    parser.add_argument("--no-graphs", action="store_true",
                        help="skip the torch.compile/CUDA-graph variant (and its compile time)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    run(dry_run=args.dry_run, out=args.out, graphs=not args.no_graphs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
