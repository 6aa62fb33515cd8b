"""The nowcast: radar frames in, ensemble products out, with the checkpoint's defaults.

``Nowcaster.from_checkpoint(path).nowcast(frames, timestamps=..., grid=...)`` is what the
service's worker, ``nowcast forecast``, ``nowcast evaluate``, the scorecard and the benchmark
run, so a Python user gets exactly what the service returns. In order:

1. check the frames (``t_in``, H, W) in ``unit`` (NaN = no data) and their time step, one of
   the steps the checkpoint serves;
2. convert them to model pixels with the checkpoint's transform and pad them with dry cells to
   the model grid (:mod:`model.padding`);
3. with ``advection="dense"``, estimate the motion field of the frames, no data masked
   (:mod:`model.lagrangian`);
4. sample the ensemble (:meth:`model.stldm.STLDM.forecast`, the paper's sampler plus the
   frame and matching of the product);
5. convert the members to rain rate, crop the padding, set NaN where the last frame had no
   data, and compute the mean, percentiles and exceedance probabilities
   (:mod:`model.products`).

Every option left ``None`` takes the checkpoint's default (:class:`NowcastDefaults`, from the
manifest's ``nowcast`` block, written by the scorecard from the validation windows).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from model.config import STLDMConfig
from model.grid import Grid
from model.lagrangian import dense_motion
from model.options import NowcastDefaults, NowcastOptions, default_step, step_of, utc
from model.padding import GridUndo, from_model_grid, to_model_grid
from model.products import PERCENTILES, ensemble_products, to_rain_rate
from model.transform import UNITS


@dataclass
class EnsembleNowcast:
    """An ensemble nowcast and its products, rain rate in mm/h, NaN where there is no data.

    Attributes
    ----------
    members : (K, T, H, W) float32 mm/h.
    mean : (T, H, W) ensemble mean.
    percentiles : (len(percentile_levels), T, H, W).
    probability : (len(thresholds), T, H, W) P(R >= threshold), the fraction of members.
    thresholds : (n,) mm/h.
    first_estimate : (T, H, W) the translator's decoded first estimate (not matched).
    lead_minutes : (T,) int.
    step_minutes : minutes between lead times (and between the input frames).
    reference_time : time of the last input frame (UTC), None when not given.
    grid : the request's grid.
    options : the options used, every default resolved.
    model_version : the checkpoint's version.
    timings : seconds of ``sampling`` (the model call, shared by a batch) and ``postprocess``.
    batch_jobs : requests sampled in the same model call.
    """

    members: np.ndarray
    mean: np.ndarray
    percentiles: np.ndarray
    probability: np.ndarray
    thresholds: np.ndarray
    first_estimate: np.ndarray
    lead_minutes: np.ndarray
    step_minutes: int
    reference_time: dt.datetime | None
    grid: Grid
    options: NowcastOptions
    model_version: str
    timings: dict[str, float] = field(default_factory=dict)
    batch_jobs: int = 1
    percentile_levels: tuple[int, ...] = PERCENTILES

    @property
    def valid_times(self) -> list[dt.datetime] | None:
        if self.reference_time is None:
            return None
        return [self.reference_time + dt.timedelta(minutes=int(m)) for m in self.lead_minutes]


@dataclass
class NowcastInput:
    """One request ready to sample: model pixels on the model grid and what maps them back."""

    pixels: np.ndarray  # (T_in, H2, W2) float32 pixels, no NaN
    undo: GridUndo
    motion: np.ndarray | None  # (2, H2, W2) with advection "dense"
    step_minutes: int
    reference_time: dt.datetime | None
    grid: Grid
    seed: int


class ForecastModel(Protocol):
    """What the pipeline needs from a model: its config and the raw sampler
    (:meth:`model.stldm.STLDM.forecast`; tests stand in with a fake of the same shape)."""

    config: STLDMConfig

    def forecast(self, x: torch.Tensor, *, seed: list[int], step_minutes: int | None,
                 motion: torch.Tensor | None, cell_km: float | None, **options: Any) -> Any:
        """``options``: :meth:`NowcastOptions.model_arguments`."""


class Nowcaster:
    """A loaded checkpoint and its defaults: the one nowcast call (module docstring).

    Parameters
    ----------
    model : an STLDM in eval mode (or a stand-in with ``config`` and ``forecast``).
    defaults : what the checkpoint serves and its default options.
    model_version : the checkpoint's version.
    """

    def __init__(self, model: ForecastModel, defaults: NowcastDefaults, *,
                 model_version: str = "unknown") -> None:
        self.model, self.defaults, self.model_version = model, defaults, model_version
        self.config = model.config

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        precision: str = "auto") -> Nowcaster:
        """Load checkpoint folder ``path``; ``precision`` is the denoiser's (:mod:`model.precision`;
        ``"auto"``, as the worker: bfloat16 where the device runs it natively, else float32)."""
        from model.checkpoint import load_checkpoint, read_manifest
        from model.precision import set_precision

        model = set_precision(load_checkpoint(path, device=device), precision)
        defaults = NowcastDefaults.from_manifest(read_manifest(path), model.config)
        return cls(model, defaults, model_version=str(getattr(model, "model_version", "unknown")))

    def options(self, *, seed: int = 0, **overrides: Any) -> NowcastOptions:
        """The options of a nowcast by name (:data:`model.options.OPTIONS`), ``None`` taking the
        checkpoint's default (:meth:`NowcastDefaults.resolve`)."""
        return self.defaults.resolve(seed=seed, train_steps=self.config.diffusion.train_steps, **overrides)

    def prepare(self, frames: np.ndarray, *, unit: str = "mm/h",
                timestamps: Sequence[dt.datetime] | None = None, step_minutes: int | None = None,
                grid: Grid | None = None, seed: int = 0, advection: str = "none",
                max_side: int | None = None) -> NowcastInput:
        """Steps 1-3 of the pipeline for one request (see the module docstring)."""
        config = self.config
        values = np.asarray(frames, dtype=np.float32)
        if values.ndim != 3 or values.shape[0] != config.t_in:
            raise ValueError(f"frames must be ({config.t_in}, H, W) (the model's t_in frames), "
                             f"got {values.shape}")
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        if np.isinf(values).any():
            raise ValueError("frames contain infinite values; mark no-data cells with NaN")
        if np.isnan(values).all():
            raise ValueError("frames are all NaN (no data anywhere); nothing to forecast from")
        served = self.defaults.step_minutes
        if timestamps is not None:
            if len(timestamps) != config.t_in:
                raise ValueError(f"timestamps must give one time per frame: {config.t_in} frames, "
                                 f"{len(timestamps)} timestamps")
            step = step_of(timestamps, served)
            if step_minutes is not None and step_minutes != step:
                raise ValueError(f"step_minutes={step_minutes} contradicts the timestamps' step "
                                 f"of {step} min")
        else:
            step = step_minutes if step_minutes is not None else default_step(served)
            if step not in served:
                raise ValueError(f"step_minutes must be one of the model's steps {list(served)}, got {step}")
        grid = grid or Grid(shape=values.shape[1:])
        if grid.shape != values.shape[1:]:
            raise ValueError(f"grid shape {grid.shape} differs from the frames' {values.shape[1:]}")
        pixels = config.transform.to_pixel(values, unit).astype(np.float32)  # NaN stays NaN
        padded, undo = to_model_grid(pixels, config.size_multiple, max_side=max_side)
        motion = None
        if advection == "dense":
            masked = np.full(padded.shape, np.nan, dtype=np.float32)
            masked[:, : pixels.shape[1], : pixels.shape[2]] = pixels
            motion = dense_motion(masked)
        return NowcastInput(pixels=padded, undo=undo, motion=motion, step_minutes=step,
                            reference_time=None if timestamps is None else utc(timestamps[-1]),
                            grid=grid, seed=int(seed))

    def sample(self, inputs: Sequence[NowcastInput], options: NowcastOptions) -> list[EnsembleNowcast]:
        """Steps 4-5 for requests of one padded shape and one step, in ONE model call (each with
        its own seed: a member does not depend on its batch-mates)."""
        if not inputs:
            return []
        shapes = {(i.pixels.shape, i.step_minutes) for i in inputs}
        if len(shapes) != 1:
            raise ValueError(f"one model call needs one padded shape and one step, got {sorted(shapes)}")
        config = self.config
        step = inputs[0].step_minutes
        options = options.for_step(step)  # the checkpoint's motion_spread for this step, where it has one
        start = time.perf_counter()
        x = torch.from_numpy(np.stack([i.pixels for i in inputs]))
        fields = [i.motion for i in inputs if i.motion is not None]
        motion = (torch.from_numpy(np.stack(fields))
                  if options.advection == "dense" and len(fields) == len(inputs) else None)
        arguments = options.model_arguments()
        if options.advection != "dense":
            arguments["motion_spread"] = 0.0
        forecast = self.model.forecast(
            x, seed=[i.seed for i in inputs], step_minutes=step if config.step_minutes else None,
            motion=motion, cell_km=self.defaults.cell_km, **arguments)
        members = forecast.members.float().cpu().numpy()  # (B, K, T, H2, W2) pixels
        first = forecast.first_estimate.float().cpu().numpy()  # (B, T, H2, W2)
        sampling = time.perf_counter() - start
        out = []
        for request, request_members, request_first in zip(inputs, members, first, strict=True):
            start = time.perf_counter()
            rain = from_model_grid(to_rain_rate(request_members, config.transform), request.undo)
            products = ensemble_products(rain, options.thresholds)
            lead = step * np.arange(1, rain.shape[1] + 1, dtype=np.int32)
            out.append(EnsembleNowcast(
                members=rain, mean=products["mean"], percentiles=products["percentiles"],
                probability=products["probability"], thresholds=products["thresholds"],
                first_estimate=from_model_grid(to_rain_rate(request_first, config.transform), request.undo),
                lead_minutes=lead, step_minutes=step, reference_time=request.reference_time,
                grid=request.grid, options=dataclasses.replace(options, seed=request.seed),
                model_version=self.model_version, batch_jobs=len(inputs),
                timings={"sampling_seconds": round(sampling, 3),
                         "postprocess_seconds": round(time.perf_counter() - start, 3)}))
        return out

    def nowcast(self, frames: np.ndarray, *, unit: str = "mm/h",
                timestamps: Sequence[dt.datetime] | None = None, step_minutes: int | None = None,
                grid: Grid | None = None, seed: int = 0, **options: Any) -> EnsembleNowcast:
        """An ensemble nowcast of the last ``t_in`` radar frames.

        Parameters
        ----------
        frames : (t_in, H, W) radar frames in ``unit`` ("mm/h", "dBZ" or "pixel"), oldest first;
            NaN = no data. Any H, W from a few cells up: padded to the model grid and back.
        timestamps : (t_in,) times of the frames; their step must be one the model serves.
        step_minutes : the step when no timestamps are given (default 5 where served).
        grid : where the cells are; returned with the products.
        seed : the request's seed.
        options : by name, :class:`NowcastOptions` (members, steps, guidance, guidance_share,
            matching, advection, motion_spread, detail_lifetime, extrapolation_lifetime,
            thresholds); None or left out takes the checkpoint's default.

        Returns
        -------
        EnsembleNowcast with members and products in mm/h.
        """
        opts = self.options(seed=seed, **options)
        request = self.prepare(frames, unit=unit, timestamps=timestamps, step_minutes=step_minutes, grid=grid,
                               seed=seed, advection=opts.advection)
        return self.sample([request], opts)[0]
