"""The options of a nowcast and a checkpoint's defaults for them (no torch: the API uses them too).

Every option a request leaves out takes the checkpoint's default, read from its manifest
(:meth:`NowcastDefaults.from_manifest`): the ``nowcast`` block the scorecard writes after
choosing them on the validation windows, or, for older checkpoints, the frame they were
trained in and the step of their training data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.products import DEFAULT_THRESHOLDS

ADVECTIONS = ("dense", "bulk", "none")
MATCHINGS = ("none", "cdf")
PRECISIONS = ("float32", "bfloat16")  # the denoiser's number format (model/precision.py)
MAX_THRESHOLDS = 16
MAX_LIFETIME = 10000.0  # minutes (detail_lifetime, extrapolation_lifetime): longer is no fading


@dataclass(frozen=True)
class NowcastOptions:
    """The options of one nowcast, every one resolved (no None).

    ``members`` ensemble size; ``steps`` DDIM steps; ``guidance`` the CFG scale w; ``seed`` the
    request's seed (member ``k`` starts from noise drawn by a generator seeded from the hash of
    ``(seed, k)``, so it does not depend on its batch-mates); ``matching`` and ``advection`` as
    :meth:`model.stldm.STLDM.forecast`; ``motion_spread`` the size of the member-wise motion
    perturbations of the dense frame (1.0 = STEPS'); ``detail_lifetime`` the minutes over which
    the detail of the last input frame that the VAE does not reconstruct fades from the members
    (0: none; :func:`model.sampler.forecast`); ``extrapolation_lifetime`` the minutes over which
    the members go from the extrapolated last frame to the model's forecast (0: the model's
    alone); ``thresholds`` of the exceedance probabilities in mm/h.
    """

    members: int
    steps: int
    guidance: float
    seed: int
    matching: str
    advection: str
    motion_spread: float
    detail_lifetime: float
    extrapolation_lifetime: float
    thresholds: tuple[float, ...]

    def group_key(self) -> tuple:
        """Jobs whose options share this key can be sampled in one call (seeds may differ)."""
        return dataclasses.astuple(dataclasses.replace(self, seed=0, thresholds=()))


@dataclass(frozen=True)
class NowcastDefaults:
    """What a checkpoint serves and its default options.

    ``step_minutes`` lists the radar time steps the model serves; ``cell_km`` is the grid
    spacing it was trained at (None when unknown); the rest are the defaults of
    :class:`NowcastOptions` (``seed`` 0).
    """

    step_minutes: tuple[int, ...]
    cell_km: float | None
    members: int = 10
    steps: int = 20
    guidance: float = 1.0
    matching: str = "cdf"
    advection: str = "none"
    motion_spread: float = 0.0
    detail_lifetime: float = 0.0
    extrapolation_lifetime: float = 0.0
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], config) -> NowcastDefaults:
        """Defaults of a checkpoint: its manifest's ``nowcast`` block where there is one; for
        older checkpoints the frame they were trained in and the step of their training data."""
        training = (manifest.get("training") or {}).get("config") or {}
        served = tuple(config.step_minutes) or (int(manifest.get("timestep_minutes")
                                                    or training.get("step_minutes") or 5),)
        block = manifest.get("nowcast") or {}
        cell_km = block.get("cell_km", training.get("cell_km"))
        return cls(
            step_minutes=served,
            cell_km=None if cell_km is None else float(cell_km),
            members=int(block.get("members", 10)),
            steps=int(block.get("steps", config.diffusion.sample_steps)),
            guidance=float(block.get("guidance", 1.0)),
            matching=str(block.get("matching", "cdf")),
            advection=str(block.get("advection", training.get("advection") or "none")),
            motion_spread=float(block.get("motion_spread", 0.0)),
            detail_lifetime=float(block.get("detail_lifetime", 0.0)),
            extrapolation_lifetime=float(block.get("extrapolation_lifetime", 0.0)),
            thresholds=tuple(float(t) for t in block.get("thresholds", DEFAULT_THRESHOLDS)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolve(self, *, members: int | None = None, steps: int | None = None, guidance: float | None = None,
                seed: int = 0, matching: str | None = None, advection: str | None = None,
                motion_spread: float | None = None, detail_lifetime: float | None = None,
                extrapolation_lifetime: float | None = None, thresholds: Sequence[float] | None = None,
                train_steps: int = 50) -> NowcastOptions:
        """The options of a nowcast, ``None`` taking these defaults; ``ValueError`` naming the
        valid range of a bad one (``train_steps`` bounds the DDIM steps)."""
        opts = NowcastOptions(
            members=self.members if members is None else int(members),
            steps=self.steps if steps is None else int(steps),
            guidance=self.guidance if guidance is None else float(guidance),
            seed=int(seed),
            matching=self.matching if matching is None else matching,
            advection=self.advection if advection is None else advection,
            motion_spread=self.motion_spread if motion_spread is None else float(motion_spread),
            detail_lifetime=self.detail_lifetime if detail_lifetime is None else float(detail_lifetime),
            extrapolation_lifetime=(self.extrapolation_lifetime if extrapolation_lifetime is None
                                    else float(extrapolation_lifetime)),
            thresholds=tuple(float(t) for t in (self.thresholds if thresholds is None else thresholds)),
        )
        checks = [
            (opts.members >= 1, f"members must be >= 1, got {opts.members}"),
            (1 <= opts.steps <= train_steps, f"steps must be in [1, {train_steps}], got {opts.steps}"),
            (0.0 <= opts.guidance <= 10.0, f"guidance must be in [0, 10], got {opts.guidance}"),
            (opts.seed >= 0, f"seed must be >= 0, got {opts.seed}"),
            (opts.matching in MATCHINGS, f"matching must be one of {MATCHINGS}, got {opts.matching!r}"),
            (opts.advection in ADVECTIONS, f"advection must be one of {ADVECTIONS}, got {opts.advection!r}"),
            (0.0 <= opts.motion_spread <= 10.0,
             f"motion_spread must be in [0, 10], got {opts.motion_spread}"),
            (0.0 <= opts.detail_lifetime <= MAX_LIFETIME,
             f"detail_lifetime must be in [0, {MAX_LIFETIME:g}] minutes, got {opts.detail_lifetime}"),
            (0.0 <= opts.extrapolation_lifetime <= MAX_LIFETIME,
             f"extrapolation_lifetime must be in [0, {MAX_LIFETIME:g}] minutes, "
             f"got {opts.extrapolation_lifetime}"),
            (1 <= len(opts.thresholds) <= MAX_THRESHOLDS
             and all(np.isfinite(t) and t >= 0 for t in opts.thresholds),
             f"thresholds must be 1 to {MAX_THRESHOLDS} finite rain rates >= 0 mm/h, "
             f"got {list(opts.thresholds)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if opts.motion_spread > 0 and opts.advection == "dense" and self.cell_km is None:
            raise ValueError("motion_spread needs the checkpoint's cell size (manifest cell_km)")
        return opts


def utc(time: dt.datetime) -> dt.datetime:
    """Aware UTC datetime; naive times are taken as UTC."""
    return time.replace(tzinfo=dt.timezone.utc) if time.tzinfo is None else time.astimezone(dt.timezone.utc)


def step_of(timestamps: Sequence[dt.datetime], served: Sequence[int]) -> int:
    """The common step of ``timestamps`` in whole minutes; ``ValueError`` unless it is one of
    ``served``."""
    times = [utc(t) for t in timestamps]
    steps = {(b - a).total_seconds() / 60 for a, b in zip(times[:-1], times[1:], strict=True)}
    if len(steps) != 1 or next(iter(steps)) not in served:
        raise ValueError(f"timestamps must increase by one of the model's time steps, {list(served)} min; "
                         f"got steps of {sorted(steps)} min")
    return int(next(iter(steps)))


