"""The options of a nowcast and a checkpoint's defaults for them (no torch: the API uses them too).

Every option a request leaves out takes the checkpoint's default, read from its manifest
(:meth:`NowcastDefaults.from_manifest`): the ``nowcast`` block the scorecard writes after
choosing them on the validation windows, or, for older checkpoints, the frame they were
trained in and the step of their training data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.products import DEFAULT_THRESHOLDS

ADVECTIONS = ("dense", "bulk", "none")
MATCHINGS = ("none", "cdf")
DETAILS = ("fade", "renew")  # how the last frame's detail enters the members (model/detail.py)
PRECISIONS = ("float32", "bfloat16")  # the denoiser's number format (model/precision.py)
PRECISION_SETTINGS = ("auto", *PRECISIONS)  # auto: bfloat16 where the device runs it natively
MAX_THRESHOLDS = 16
MAX_LIFETIME = 10000.0  # minutes (detail_lifetime, extrapolation_lifetime): longer is no fading


def _thresholds(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(t) for t in values)


def flag(value: Any) -> bool:
    """A yes/no option: a bool, 0 or 1, or the words true/false (a form field's text)."""
    if isinstance(value, bool | int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"must be true or false, got {value!r}")


# The options a request may set, each with the type it is read as; the names are the same in
# the API's schemas, the queue's job, the result's metadata and the model's arguments.
# ``steps`` is the service's setting (NOWCAST_MODEL__STEPS), not a request's.
REQUEST_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "members": int, "guidance": float, "guidance_share": float, "matching": str, "advection": str,
    "motion_spread": float, "detail_lifetime": float, "detail": str, "extrapolation_lifetime": float,
    "blend_spread": float, "estimate_lifetime": float, "antithetic": flag, "thresholds": _thresholds,
}
OPTIONS: dict[str, Callable[[Any], Any]] = {"steps": int, **REQUEST_OPTIONS}


@dataclass(frozen=True)
class NowcastOptions:
    """The options of one nowcast, every one resolved (no None).

    ``members`` ensemble size; ``steps`` DDIM steps; ``guidance`` the CFG scale w;
    ``guidance_share`` the share of the DDIM steps, the noisiest first, that apply it (1: all,
    as the paper; :func:`model.sampler.guided_steps`); ``seed`` the
    request's seed (member ``k`` starts from noise drawn by a generator seeded from the hash of
    ``(seed, k)``, so it does not depend on its batch-mates); ``matching`` and ``advection`` as
    :meth:`model.stldm.STLDM.forecast`; ``motion_spread`` the size of the member-wise motion
    perturbations of the dense frame (1.0 = STEPS'); ``detail_lifetime`` the minutes over which
    the detail of the last input frame that the VAE does not reconstruct fades from the members
    (0: none; :func:`model.sampler.forecast`); ``detail`` how it does so, "fade" (the same in
    every member) or "renew" (each member's own, renewed with noise, :mod:`model.detail`);
    ``extrapolation_lifetime`` the minutes over which
    the members go from the extrapolated last frame to the model's forecast (0: the model's
    alone); ``blend_spread`` how much of the members' own spread that blend keeps at short leads
    (0: the share ``1 - w`` the blend gives the members; :func:`model.sampler.blend_members`);
    ``estimate_lifetime`` the minutes over which that blend's target goes from the last frame to
    the translator's first estimate (0: the last frame at every lead; :func:`model.sampler.blend_target`);
    ``antithetic`` whether the members come in mirrored pairs (:mod:`model.pairs`);
    ``thresholds`` of the exceedance probabilities in mm/h; ``motion_spread_by_step`` the
    checkpoint's ``motion_spread`` for each radar time step, ``(minutes, size)`` pairs, kept when
    the request leaves ``motion_spread`` out (:meth:`for_step` applies it once the step is known;
    empty: ``motion_spread`` at every step).
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
    guidance_share: float = 1.0
    detail: str = "fade"
    blend_spread: float = 0.0
    estimate_lifetime: float = 0.0
    antithetic: bool = False
    motion_spread_by_step: tuple[tuple[int, float], ...] = ()

    def for_step(self, step_minutes: int) -> NowcastOptions:
        """These options for radar of ``step_minutes``: ``motion_spread`` that step's size where
        ``motion_spread_by_step`` lists it, the map then dropped (the options a nowcast ran with)."""
        sizes = dict(self.motion_spread_by_step)
        spread = sizes.get(int(step_minutes), self.motion_spread)
        return dataclasses.replace(self, motion_spread=spread, motion_spread_by_step=())

    def group_key(self) -> tuple:
        """Jobs whose options share this key can be sampled in one call (seeds may differ)."""
        return dataclasses.astuple(dataclasses.replace(self, seed=0, thresholds=()))

    def model_arguments(self) -> dict[str, Any]:
        """The options :func:`model.sampler.forecast` takes (all but ``thresholds``, ``seed``)."""
        return {name: getattr(self, name) for name in OPTIONS if name != "thresholds"}


@dataclass(frozen=True)
class NowcastDefaults:
    """What a checkpoint serves and its default options.

    ``step_minutes`` lists the radar time steps the model serves; ``cell_km`` is the grid
    spacing it was trained at (None when unknown); ``motion_spread_by_step`` the default
    ``motion_spread`` of each step that has its own (the manifest's ``{"minutes": size}``; a step
    it does not list takes ``motion_spread``); the rest are the defaults of
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
    guidance_share: float = 1.0
    detail: str = "fade"
    blend_spread: float = 0.0
    estimate_lifetime: float = 0.0
    antithetic: bool = False
    motion_spread_by_step: tuple[tuple[int, float], ...] = ()

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], config) -> NowcastDefaults:
        """Defaults of a checkpoint: its manifest's ``nowcast`` block where there is one; for
        older checkpoints the frame they were trained in and the step of their training data.
        An option the block does not name takes the paper's value (or none of the option)."""
        training = (manifest.get("training") or {}).get("config") or {}
        served = tuple(config.step_minutes) or (int(manifest.get("timestep_minutes")
                                                    or training.get("step_minutes") or 5),)
        block = manifest.get("nowcast") or {}
        cell_km = block.get("cell_km", training.get("cell_km"))
        fallback = {"steps": config.diffusion.sample_steps, "advection": training.get("advection") or "none"}
        given = {name: read(block[name] if name in block else fallback.get(name, getattr(cls, name)))
                 for name, read in OPTIONS.items()}
        return cls(step_minutes=served, cell_km=None if cell_km is None else float(cell_km),
                   motion_spread_by_step=sizes_by_step(block.get("motion_spread_by_step") or {}), **given)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``motion_spread_by_step`` as ``{"minutes": size}``."""
        return {**dataclasses.asdict(self),
                "motion_spread_by_step": {str(step): size for step, size in self.motion_spread_by_step}}

    def resolve(self, *, seed: int = 0, train_steps: int = 50, **overrides: Any) -> NowcastOptions:
        """The options of a nowcast: ``overrides`` by name (:data:`OPTIONS`), ``None`` taking
        these defaults; ``ValueError`` naming the valid range of a bad one (``train_steps``
        bounds the DDIM steps), ``TypeError`` for a name that is not an option."""
        unknown = sorted(set(overrides) - set(OPTIONS))
        if unknown:
            raise TypeError(f"not nowcast options: {unknown}; the options are {list(OPTIONS)}")
        # the sizes by step hold unless the request gives its own size, which then holds at every step
        by_step = self.motion_spread_by_step if overrides.get("motion_spread") is None else ()
        opts = NowcastOptions(seed=int(seed), motion_spread_by_step=by_step, **{
            name: read(getattr(self, name) if overrides.get(name) is None else overrides[name])
            for name, read in OPTIONS.items()})
        sizes = (opts.motion_spread, *dict(by_step).values())
        checks = [
            (opts.members >= 1, f"members must be >= 1, got {opts.members}"),
            (1 <= opts.steps <= train_steps, f"steps must be in [1, {train_steps}], got {opts.steps}"),
            (0.0 <= opts.guidance <= 10.0, f"guidance must be in [0, 10], got {opts.guidance}"),
            (0.0 <= opts.guidance_share <= 1.0,
             f"guidance_share must be in [0, 1], got {opts.guidance_share}"),
            (opts.seed >= 0, f"seed must be >= 0, got {opts.seed}"),
            (opts.matching in MATCHINGS, f"matching must be one of {MATCHINGS}, got {opts.matching!r}"),
            (opts.advection in ADVECTIONS, f"advection must be one of {ADVECTIONS}, got {opts.advection!r}"),
            (all(0.0 <= size <= 10.0 for size in sizes),
             f"motion_spread must be in [0, 10], got {opts.motion_spread} (by step: {dict(by_step)})"),
            (0.0 <= opts.detail_lifetime <= MAX_LIFETIME,
             f"detail_lifetime must be in [0, {MAX_LIFETIME:g}] minutes, got {opts.detail_lifetime}"),
            (opts.detail in DETAILS, f"detail must be one of {DETAILS}, got {opts.detail!r}"),
            (0.0 <= opts.extrapolation_lifetime <= MAX_LIFETIME,
             f"extrapolation_lifetime must be in [0, {MAX_LIFETIME:g}] minutes, "
             f"got {opts.extrapolation_lifetime}"),
            (0.0 <= opts.blend_spread <= 1.0, f"blend_spread must be in [0, 1], got {opts.blend_spread}"),
            (0.0 <= opts.estimate_lifetime <= MAX_LIFETIME,
             f"estimate_lifetime must be in [0, {MAX_LIFETIME:g}] minutes, got {opts.estimate_lifetime}"),
            (1 <= len(opts.thresholds) <= MAX_THRESHOLDS
             and all(np.isfinite(t) and t >= 0 for t in opts.thresholds),
             f"thresholds must be 1 to {MAX_THRESHOLDS} finite rain rates >= 0 mm/h, "
             f"got {list(opts.thresholds)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if max(sizes) > 0 and opts.advection == "dense" and self.cell_km is None:
            raise ValueError("motion_spread needs the checkpoint's cell size (manifest cell_km)")
        return opts


def sizes_by_step(values: dict[Any, Any]) -> tuple[tuple[int, float], ...]:
    """``{minutes: size}`` (a manifest's JSON, keys as text) -> sorted ``(minutes, size)`` pairs;
    ``ValueError`` for a step that is not a whole number of minutes >= 1."""
    pairs = []
    for step, size in values.items():
        minutes = float(step)
        if minutes != int(minutes) or minutes < 1:
            raise ValueError(f"motion_spread_by_step: steps are whole minutes >= 1, got {step!r}")
        pairs.append((int(minutes), float(size)))
    return tuple(sorted(pairs))


def default_step(served: Sequence[int]) -> int:
    """The step of a request that names none (no timestamps, no step): 5 minutes where served,
    else the first served step."""
    return 5 if 5 in served else int(served[0])


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


