"""The knobs of a training run (:class:`TrainConfig`) and the ``nowcast train`` flags.

One name per knob: the field ``batch_size`` is the flag ``--batch-size``, with the same default.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from model.advection import ADVECTIONS
from model.config import OptionsConfig
from training.objective import RECONSTRUCTION_ONLY, STRATEGIES

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVENTS = REPO_ROOT.parent / "shared" / "radar" / "events"
SYNTHETIC_WINDOWS = (512, 32)  # train, validation windows of --synthetic

# what chooses <out>/best, and the validation metric it minimises
SELECTIONS = {"loss": "loss_total", "skill": "crps_ensemble"}

HELP = {
    "name": "run name; the output folder defaults to runs/<name>",
    "data": f"radar event files or folders of them (none given: {DEFAULT_EVENTS})",
    "synthetic": "train on synthetic moving rain cells instead of radar data",
    "init": "checkpoint folder to fine-tune from (none given: a fresh model)",
    "preset": "architecture of a fresh model: small or paper",
    "t_in": "input frames", "t_out": "forecast frames", "size": "frame side in pixels",
    "cell_km": "grid spacing the radar is resampled to, km",
    "stride": "spacing of the windows in cells (0: size, non-overlapping)",
    "step_minutes": "time step of the frames, minutes (0: every step the model serves, "
                    "or 5 for a model without a step embedding)",
    "min_leads": "shortest window kept, in leads (the missing leads of a short window are masked)",
    "min_rain_fraction": "smallest fraction of rainy cells (among those with data) a window needs",
    "val_fraction": "fraction of each network's windows drawn for validation (radar/split.py)",
    "test_minutes": "the last this many minutes of every event group twice as long are held out "
                    "for evaluation (radar/split.py)",
    "block_minutes": "length of the time blocks drawn for validation",
    "test_region": "event file whose area is held out for evaluation in every file on its grid",
    "val_region": "event file whose area is held out for validation in every file on its grid",
    "min_coverage": "smallest fraction of valid pixels a window needs",
    "augment": "random flips and rotations of training windows",
    "balance": "draw training windows so that every (network, step) has the same share",
    "motion_kmh": "with augment, add a random uniform motion of up to this speed (km/h) to each "
                  "training window, cut along the moving frame (0: off)",
    "motion_cache": "folder of the motion fields of advection='dense' windows (computed once, reused)",
    "advection": "dense: train in the frame moving with each window's motion field, as "
                 "forecast(advection='dense') forecasts; bulk: with its bulk motion; none: on the "
                 "ground, as the paper",
    "strategy": f"what is trained: {', '.join(STRATEGIES)}",
    "pixel_frames": "decode only this many random frames for the pixel-space loss terms (0: all, as "
                    "the paper; an unbiased estimate at a fraction of the cost)",
    "ensemble_weight": "weight of the ensemble objective (training/ensemble.py: the fair CRPS in mm/h "
                       "of members sampled as the service samples them; 0: off, as the paper)",
    "ensemble_members": "members per window of the ensemble objective (>= 2)",
    "ensemble_steps": "DDIM steps of the ensemble objective's members",
    "ensemble_blend": "minutes; the ensemble objective blends its members with the last input frame "
                      "with weight exp(-lead / this), as the service's extrapolation_lifetime (0: none)",
    "ensemble_detail": "minutes; the ensemble objective adds the last input frame's detail renewed member "
                       "by member with this lifetime, as the service's detail='renew' (0: none)",
    "ensemble_guidance": "guidance scale of the ensemble objective's guided DDIM steps, as the service's "
                         "guidance",
    "ensemble_blend_spread": "share of their departures from the ensemble mean the ensemble objective's "
                             "members keep in the blend, as the service's blend_spread (0: linear blend)",
    "ensemble_estimate": "minutes; the ensemble objective's blend goes from the last frame to the first "
                         "estimate with this e-folding lead time, as the service's estimate_lifetime "
                         "(0: the last frame alone)",
    "ensemble_motion_spread": "size of the ensemble objective's member-wise motion perturbations, as the "
                              "service's motion_spread (1: pysteps' sizes; 0: none)",
    "steps": "optimiser steps in total", "batch_size": "windows per step and process",
    "lr": "peak learning rate", "weight_decay": "AdamW weight decay (not on norms and biases)",
    "warmup_steps": "linear warm-up from 0.1 x lr", "min_lr": "learning rate at the end of the cosine",
    "grad_clip": "gradient-norm clipping (0: off)", "ema_decay": "EMA of weights (0: off)",
    "seed": "seed of weights, data order and noise", "device": "auto, cpu, cuda or cuda:N",
    "bf16": "bfloat16 autocast (CUDA only)", "threads": "torch CPU threads (0: torch's default)",
    "eval_every": "validate and save <out>/last every this many steps",
    "val_batches": "validation batches for the loss terms",
    "val_members": "ensemble members of the validation forecast (0: skip it)",
    "val_steps": "DDIM steps of the validation forecast",
    "val_skill_batches": "validation batches of the ensemble skill check (its CRPS is their mean)",
    "select": "what chooses <out>/best: loss (lowest validation loss) or skill (lowest ensemble "
              "CRPS of the skill check, the sampled members themselves)",
    "out": "output folder (none given: runs/<name>)", "resume": "continue from <out>/last",
    "num_workers": "data-loader worker processes",
    "max_minutes": "wall-clock budget: stop, validate and save when exceeded (0: none)",
    "log_every": "write a log.jsonl line every this many steps",
    "options": "model options (docs/OPTIONS.md) as key=value,key=value, e.g. "
               "temporal_shift=true,attention_order=sts,intensity_thresholds=1:4:8; applied to a "
               "fresh model and to the --init model (weights copied where they fit)",
}
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; the CLI flags are the same names (``--batch-size``)."""

    name: str = "default"
    data: tuple[str, ...] = ()
    synthetic: bool = False
    init: str = ""
    preset: str = "small"
    t_in: int = 5
    t_out: int = 20
    size: int = 128
    cell_km: float = 4.0
    stride: int = 0
    step_minutes: int = 0
    min_leads: int = 6
    min_rain_fraction: float = 0.02
    val_fraction: float = 0.2
    test_minutes: int = 100
    block_minutes: int = 100
    test_region: str = "mrms_20190610_ohiovalley.nc"
    val_region: str = "mrms_20190610_greatlakes.nc"
    min_coverage: float = 0.5
    augment: bool = True
    balance: bool = True
    motion_kmh: float = 0.0
    advection: str = "none"
    motion_cache: str = "runs/cache/motion"
    strategy: str = "end_to_end"
    pixel_frames: int = 0
    ensemble_weight: float = 0.0
    ensemble_members: int = 2
    ensemble_steps: int = 5
    ensemble_blend: float = 90.0
    ensemble_detail: float = 60.0
    ensemble_guidance: float = 2.0
    ensemble_blend_spread: float = 0.5
    ensemble_estimate: float = 180.0
    ensemble_motion_spread: float = 0.0
    steps: int = 1500
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 150
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    threads: int = 0
    eval_every: int = 250
    val_batches: int = 8
    val_members: int = 2
    val_steps: int = 10
    val_skill_batches: int = 1
    select: str = "loss"
    out: str = ""
    resume: bool = False
    num_workers: int = 0
    max_minutes: float = 55.0
    log_every: int = 10
    options: str = ""

    def __post_init__(self) -> None:
        parse_options(self.options)  # fails early, naming a bad key or value
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for knob in ("steps", "batch_size", "eval_every", "log_every", "val_batches", "val_steps",
                     "val_skill_batches"):
            if getattr(self, knob) < 1:
                raise ValueError(f"{knob} must be >= 1, got {getattr(self, knob)}")
        if self.advection not in ADVECTIONS:
            raise ValueError(f"advection must be one of {ADVECTIONS}, got {self.advection!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {tuple(SELECTIONS)}, got {self.select!r}")
        if self.select == "skill" and self.val_members < 1:
            raise ValueError("select='skill' needs the skill check: val_members must be >= 1")
        if self.motion_kmh < 0:
            raise ValueError(f"motion_kmh must be >= 0, got {self.motion_kmh}")
        if self.motion_kmh and self.advection == "dense":
            raise ValueError("motion_kmh adds a uniform motion to bulk or ground windows; it does not "
                             "apply to advection='dense'")
        if min(self.ensemble_weight, self.ensemble_blend, self.ensemble_detail, self.ensemble_estimate) < 0:
            raise ValueError("ensemble_weight, ensemble_blend, ensemble_detail and ensemble_estimate must "
                             f"be >= 0, got {self.ensemble_weight}, {self.ensemble_blend}, "
                             f"{self.ensemble_detail} and {self.ensemble_estimate}")
        if self.ensemble_motion_spread < 0:
            raise ValueError(f"ensemble_motion_spread must be >= 0, got {self.ensemble_motion_spread}")
        if not 0.0 <= self.ensemble_blend_spread <= 1.0:
            raise ValueError(f"ensemble_blend_spread must be in [0, 1], got {self.ensemble_blend_spread}")
        if self.ensemble_weight and (self.ensemble_members < 2 or self.ensemble_steps < 1):
            raise ValueError("the ensemble objective needs ensemble_members >= 2 and ensemble_steps >= 1, "
                             f"got {self.ensemble_members} and {self.ensemble_steps}")
        if self.ensemble_weight and self.strategy in RECONSTRUCTION_ONLY:
            raise ValueError(f"strategy {self.strategy!r} trains on the reconstruction alone: the ensemble "
                             "objective does not apply")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def resolved(self, device: torch.device) -> TrainConfig:
        """Defaults filled in (data, out, device): the config written into checkpoints."""
        data = self.data or (() if self.synthetic else (str(DEFAULT_EVENTS),))
        return dataclasses.replace(self, data=tuple(data), out=self.out or str(Path("runs") / self.name),
                                   device=str(device))


def parse_options(text: str, base: OptionsConfig | None = None) -> OptionsConfig:
    """``base`` (default: the default options) with the ``key=value,key=value`` of ``text`` applied.

    Booleans are true/false (also 1/0, yes/no, on/off); tuples are colon-separated
    (``intensity_thresholds=1:4:8``). Raises ``ValueError`` naming an unknown key or bad value.
    """
    base = base or OptionsConfig()
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(OptionsConfig)}
    changes: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if key not in fields or not sep:
            raise ValueError(f"--options: unknown option {key!r} (write key=value); valid keys: "
                             f"{sorted(fields)}")
        default = fields[key]
        if isinstance(default, bool):
            if raw.lower() not in TRUE + FALSE:
                raise ValueError(f"--options: {key} must be true or false, got {raw!r}")
            changes[key] = raw.lower() in TRUE
        elif isinstance(default, tuple):
            try:
                changes[key] = tuple(float(v) for v in raw.split(":"))
            except ValueError:
                raise ValueError(f"--options: {key} must be numbers separated by ':', got {raw!r}") from None
        else:
            changes[key] = raw
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as err:
        raise ValueError(f"--options: {err}") from None


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`TrainConfig` field, same name with dashes, same default."""
    parser = argparse.ArgumentParser(
        prog="nowcast train", description="Train STLDM (recipe of STLDM.md section 5) on radar "
        "event files; writes log.jsonl and the checkpoint folders last/ and best/.")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        text = HELP[field.name] + (f" (default: {field.default})" if field.default not in ("", ()) else "")
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                                help=HELP[field.name])
        elif field.type.startswith("tuple"):
            parser.add_argument(flag, nargs="+", default=list(field.default), metavar="PATH", help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[field.type]
            parser.add_argument(flag, type=kind, default=field.default, help=text)
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of command-line flags ``argv`` (``sys.argv[1:]`` when None)."""
    args = vars(build_parser().parse_args(argv))
    return TrainConfig(**{**args, "data": tuple(args["data"])})

