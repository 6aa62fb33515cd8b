"""``nowcast bench``: seconds per ensemble and achieved GFLOP/s, side by side with pysteps.

Timings are medians over repeats after a warm-up, at ``threads`` torch threads (1 by default:
a service worker runs one thread per process), with the allocator settings of the worker
(:mod:`model.allocator`). Where a full 20-step ensemble would take minutes (the paper preset
on a CPU), the time is composed exactly from a 1-step forecast (encoding, translator, one
denoiser call, decoding) plus 19 separately timed denoiser calls on the prepared condition.

With ``checkpoint`` it also times the nowcast a service worker makes with that checkpoint and
its defaults (``model.nowcast.Nowcaster.nowcast``: motion field, perturbed members, sampling
with the checkpoint's DDIM steps and guidance, decoding, the short-lead blend, advection back
and matching), the figure the service's users wait for.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from model.allocator import keep_freed_memory
from model.config import STLDMConfig
from model.precision import bfloat16_supported, dtype_of, set_precision
from model.stldm import STLDM

DEFAULT_EVENT = Path(__file__).resolve().parents[2] / "shared" / "radar" / "events" / "fmi_20160928.nc"


@dataclass
class BenchResult:
    preset: str
    device: str
    dtype: str
    members: int
    seconds: float
    gflop: float
    method: str

    @property
    def gflops(self) -> float:
        return self.gflop / self.seconds


def sample_input(config: STLDMConfig, event: Path | None) -> tuple[np.ndarray, int]:
    """(T_in, size, size) rain rate mm/h from a real event when available, and its step."""
    if event is not None and event.is_file():
        from radar.read import cut_window, read_event

        seq = cut_window(read_event(event), start=0, n_frames=config.t_in, size=config.size,
                         coarsen=4)
        return np.nan_to_num(seq.values, nan=0.0), seq.timestep_minutes
    rng = np.random.default_rng(0)
    return rng.gamma(0.5, 2.0, (config.t_in, config.size, config.size)).astype(np.float32), 5


def timed(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(preset: str, x: torch.Tensor, *, members: int, device: str, dtype: torch.dtype,
                repeats: int, compose: bool, step_minutes: int | None = None) -> BenchResult:
    """On CUDA a non-float32 ``dtype`` runs the networks under autocast; on the CPU it is the
    denoiser's precision (:mod:`model.precision`), as a worker with that setting runs."""
    config = STLDMConfig.preset_named(preset, t_in=x.shape[1], size=x.shape[-1])
    model = STLDM(config).to(device).eval()
    x = x.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    amp = None if dtype == torch.float32 or device == "cpu" else dtype
    if device == "cpu":
        set_precision(model, str(dtype).removeprefix("torch."))
    net = next(model.denoiser.parameters()).dtype
    step = step_minutes if step_minutes in config.step_minutes else None  # None: no step embedding

    def run(steps: int) -> None:
        model.forecast(x, members=members, steps=steps, guidance=1.0, seed=0, autocast_dtype=amp,
                       step_minutes=step)

    run(1)  # warm-up
    with FlopCounterMode(display=False) as counter:
        run(1)
    one_step_flop = counter.get_total_flops()
    latent = config.size // config.vae.downsample
    z = torch.randn(2 * members, config.t_out, config.latent_channels, latent, latent, device=device)
    t = torch.full((2 * members,), 10, device=device)
    cond = torch.randn_like(z)
    z, cond = z.to(net), cond.to(net)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.denoiser(z, t, cond)
    call_flop = counter.get_total_flops()
    gflop = (one_step_flop + 19 * call_flop) / 1e9
    if compose:
        with torch.inference_mode():
            prepared = model.denoiser.prepare(cond, z)

        def call() -> None:
            with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype,
                                                        enabled=amp is not None):
                model.denoiser.run(z, t, prepared)
        seconds = timed(lambda: run(1), repeats, sync) + 19 * timed(call, repeats, sync)
        method = "1 step + 19 denoiser calls"
    else:
        run(20)
        seconds = timed(lambda: run(20), repeats, sync)
        method = "full 20-step run"
    return BenchResult(preset, device, str(dtype).removeprefix("torch."), members, seconds,
                       gflop, method)


def bench_service(checkpoint: Path, event: Path | None, *, precision: str, repeats: int,
                  members: int) -> tuple[float, str]:
    """Median seconds of one nowcast by a worker serving ``checkpoint`` with its defaults (but
    ``members``) in ``precision``, and a description of the options."""
    from model.nowcast import Nowcaster

    nowcaster = Nowcaster.from_checkpoint(checkpoint, precision=precision)
    frames, step = sample_input(nowcaster.config, event)
    opts = nowcaster.options(members=members)

    def run() -> None:
        nowcaster.nowcast(frames, unit="mm/h", step_minutes=step, members=members)

    run()  # warm-up
    about = (f"{nowcaster.model_version}: {opts.steps} DDIM steps, guidance {opts.guidance:g} on "
             f"{opts.guidance_share:.0%} of them, advection {opts.advection}, matching {opts.matching}, "
             f"detail {opts.detail} ({opts.detail_lifetime:g} min)")
    return timed(run, repeats, lambda: None), about


def bench_pysteps(frames_mmh: np.ndarray, *, members: int, t_out: int, step: int,
                  repeats: int) -> float | None:
    """Median seconds of a pysteps STEPS ensemble on the same input; None without pysteps."""
    from verification.baselines import steps_nowcast

    def run() -> None:
        steps_nowcast(frames_mmh, n_members=members, n_leadtimes=t_out, timestep_minutes=step,
                      seed=0)

    try:
        run()  # warm-up; pysteps is imported (quietly) on first use
    except ImportError:
        return None
    return timed(run, repeats, lambda: None)


def run_bench(*, presets: list[str], members: int, repeats: int, event: Path | None,
              with_pysteps: bool, compose_paper_on_cpu: bool = True, threads: int = 1,
              precisions: list[str] | None = None, checkpoint: Path | None = None) -> list[str]:
    """Run the benchmark at ``threads`` torch threads and return the printed lines.

    ``precisions``: the denoiser's formats timed on the CPU (default float32, and bfloat16 where
    the CPU has native bfloat16 kernels). ``checkpoint``: also time a worker's nowcast with it
    (:func:`bench_service`)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    keep_freed_memory()
    lines = []
    config = STLDMConfig.small()
    frames, step = sample_input(config, event)
    transform = config.transform
    x = torch.from_numpy(transform.to_pixel(frames, "mm/h"))[None]
    if precisions is None:
        precisions = ["float32"] + (["bfloat16"] if bfloat16_supported(torch.device("cpu")) else [])
    targets = [("cpu", dtype_of(p)) for p in precisions]
    if torch.cuda.is_available():
        targets.append(("cuda", torch.bfloat16))
    lines.append(f"input: {'real radar ' + event.name if event and event.is_file() else 'synthetic'}"
                 f" {tuple(x.shape)}, {members} members; presets untrained, 20 DDIM steps, guidance 1.0 "
                 f"on every step; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    lines.append(f"{'preset':8s} {'device':6s} {'dtype':9s} {'s/ensemble':>11s} {'GFLOP':>9s} "
                 f"{'GFLOP/s':>9s}  method")
    results = []
    for preset in presets:
        for device, dtype in targets:
            compose = compose_paper_on_cpu and preset == "paper" and device == "cpu"
            r = bench_model(preset, x, members=members, device=device, dtype=dtype,
                            repeats=repeats, compose=compose, step_minutes=step)
            results.append(r)
            lines.append(f"{r.preset:8s} {r.device:6s} {r.dtype:9s} {r.seconds:11.2f} "
                         f"{r.gflop:9.1f} {r.gflops:9.1f}  {r.method}")
    for precision in precisions if checkpoint is not None else []:
        seconds, about = bench_service(checkpoint, event, precision=precision, repeats=repeats,
                                             members=members)
        results.append(BenchResult("service", "cpu", precision, members, seconds, float("nan"), about))
        lines.append(f"{'service':8s} {'cpu':6s} {precision:9s} {seconds:11.2f} {'':>9s} {'':>9s}  "
                     f"the worker's nowcast, {about}")
    if with_pysteps:
        seconds = bench_pysteps(frames, members=members, t_out=config.t_out, step=step,
                                repeats=repeats)
        if seconds is None:
            lines.append("pysteps STEPS: not installed (pip install 'nowcast[eval]')")
        else:
            lines.append(f"pysteps STEPS  cpu    float64   {seconds:11.2f}  (same input, members, leads)")
            for r in results:
                if r.device == "cpu":
                    lines.append(f"ratio {r.preset} ({r.dtype})/pysteps on cpu: {r.seconds / seconds:.2f}")
    return lines
