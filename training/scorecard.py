"""Score a trained checkpoint on its own validation windows and write its model card.

``python -m training.scorecard --checkpoint runs/default/best --out checkpoints/default``
rebuilds the validation split the run used (from the manifest's training config), forecasts
every window with the ensemble, and scores it next to persistence (the last input frame) and,
when pysteps is installed, pysteps extrapolation:

- CSI at 1 mm/h from contingency counts summed over pixels, windows and members (each member
  scored, as in the paper), per lead time;
- CRPS in mm/h, the fair ensemble form
  ``mean_i |X_i - y| - sum_ij |X_i - X_j| / (2 K (K - 1))`` (the MAE for persistence).
Only pixels with data in the truth count. The checkpoint is copied to ``--out`` with the
scores in its manifest and a ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from model.advection import ADVECTIONS
from model.checkpoint import MANIFEST_FILE, CheckpointError, load_checkpoint, read_manifest
from model.matching import MATCHINGS

log = logging.getLogger(__name__)


def fair_crps(members: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    """Mean fair CRPS of (K, H, W) members vs (H, W) truth over ``valid`` (H, W) pixels, mm/h."""
    k = members.shape[0]
    skill = np.abs(members - truth).mean(axis=0)
    if k > 1:
        spread = np.abs(members[:, None] - members[None]).sum(axis=(0, 1)) / (2 * k * (k - 1))
        skill = skill - spread
    return float(skill[valid].mean())


class Counts:
    """Contingency counts per lead time, summed over everything scored."""

    def __init__(self, n_leads: int) -> None:
        self.hits = np.zeros(n_leads)
        self.misses = np.zeros(n_leads)
        self.false_alarms = np.zeros(n_leads)

    def add(self, lead: int, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray,
            threshold: float) -> None:
        """forecast (..., H, W) and truth (H, W) in mm/h; valid (H, W) bool."""
        f, o = forecast >= threshold, np.broadcast_to(truth >= threshold, forecast.shape)
        v = np.broadcast_to(valid, forecast.shape)
        self.hits[lead] += np.sum(f & o & v)
        self.misses[lead] += np.sum(~f & o & v)
        self.false_alarms[lead] += np.sum(f & ~o & v)

    def csi(self) -> np.ndarray:
        return self.hits / np.maximum(self.hits + self.misses + self.false_alarms, 1)


def validation_windows(manifest: dict, transform, stride: int | None = None):
    """The validation windows of the run that made ``manifest`` (its data, steps and split rule),
    and the run's steps."""
    from radar.split import SplitRule
    from training.data import build_splits

    cfg, data = manifest["training"]["config"], manifest["training"]["data"]
    steps = tuple(data.get("steps") or [cfg["step_minutes"]])
    rule = SplitRule(**data["split"]) if "split" in data else SplitRule(
        val_fraction=cfg["val_fraction"], seed=cfg["seed"], test_minutes=0, test_region="", val_region="")
    val = build_splits(
        data["files"], t_in=cfg["t_in"], t_out=cfg["t_out"], steps=steps, size=cfg["size"],
        cell_km=cfg["cell_km"], transform=transform, rule=rule, min_leads=cfg.get("min_leads", cfg["t_out"]),
        min_coverage=cfg["min_coverage"], min_rain_fraction=cfg.get("min_rain_fraction", 0.0),
        stride=stride or cfg.get("stride") or None, augment=False, which=("val",))["val"]
    return val, steps


def score(model, windows, *, members: int, threshold: float = 1.0, seed: int = 0,
          matching: str = "none", guidance: float = 1.0, steps: int = 20, advection: str = "none",
          extrapolation: bool = False) -> dict:
    """Per-lead CSI and CRPS of the ensemble, the first estimate and persistence, and of pysteps
    extrapolation (Lucas-Kanade + semi-Lagrangian) when ``extrapolation``."""
    transform, t_out = model.config.transform, model.config.t_out
    names = ("ensemble", "first_estimate", "persistence") + (("extrapolation",) if extrapolation else ())
    if extrapolation:
        from verification.baselines import extrapolation_nowcast
    counts = {n: Counts(t_out) for n in names}
    crps = {n: np.zeros(t_out) for n in names}
    for i in range(len(windows)):
        item = windows[i]
        out = model.forecast(item["x"][None], members=members, seed=seed + i, matching=matching,
                             advection=advection, guidance=guidance, steps=steps)
        ens = transform.from_pixel(out.members[0].numpy(), "mm/h")  # (K, T, H, W)
        first = transform.from_pixel(out.first_estimate[0].numpy(), "mm/h")
        truth = transform.from_pixel(item["y"].numpy(), "mm/h")
        last = transform.from_pixel(item["x"][-1].numpy(), "mm/h")
        valid = item["valid"][model.config.t_in:].numpy()
        if extrapolation:
            frames = np.where(item["valid"][:model.config.t_in].numpy(),
                              transform.from_pixel(item["x"].numpy(), "mm/h"), np.nan)
            advected = np.nan_to_num(extrapolation_nowcast(frames, n_leadtimes=t_out), nan=0.0)
        for lead in range(t_out):
            forecasts = {"ensemble": ens[:, lead], "first_estimate": first[lead][None],
                         "persistence": last[None]}
            if extrapolation:
                forecasts["extrapolation"] = advected[lead][None]
            for name, fc in forecasts.items():
                counts[name].add(lead, fc, truth[lead], valid[lead], threshold)
                crps[name][lead] += fair_crps(fc, truth[lead], valid[lead])
    return {n: {"csi": counts[n].csi().tolist(), "crps": (crps[n] / len(windows)).tolist()}
            for n in names}


def init_summary(init: Path) -> dict | None:
    """What a fine-tune started from: the ``--init`` checkpoint's version, steps, wall time and
    recipe (and, in turn, what that one started from), or None when it cannot be read."""
    try:
        manifest = read_manifest(init)
    except CheckpointError:
        return None
    training = manifest.get("training") or {}
    cfg = training.get("config") or {}
    keys = ("name", "init", "data", "stride", "advection", "motion_kmh", "steps", "batch_size", "lr",
            "warmup_steps", "ema_decay", "strategy", "seed")
    return {"model_version": manifest.get("model_version"), "step": training.get("step"),
            "wall_seconds": training.get("wall_seconds"), "hardware": training.get("hardware"),
            "config": {k: cfg.get(k) for k in keys},
            "init_training": _init_training(manifest)}


def _init_training(manifest: dict) -> dict | None:
    """The stored summary of what a checkpoint started from, else one read from its ``--init``.

    An ``--init`` folder overwritten by this very model since (a fine-tune of
    checkpoints/default shipped back there) is skipped for what it records in turn.
    """
    training = manifest.get("training") or {}
    init = (training.get("config") or {}).get("init")
    summary = training.get("init_training") or (init_summary(Path(init)) if init else None)
    if summary and summary["model_version"] == manifest.get("model_version"):
        return summary["init_training"]
    return summary


def _train_command(cfg: dict) -> str:
    words = ["nowcast train --data " + " ".join(cfg.get("data") or ["../shared/radar/events"])]
    if cfg.get("name") not in (None, "default"):
        words.append(f"--name {cfg['name']}")
    if cfg.get("init"):
        words.append(f"--init {cfg['init']}")
    for key in ("stride", "advection", "motion_kmh", "steps", "lr", "warmup_steps", "ema_decay"):
        if cfg.get(key) and cfg.get(key) != "none":
            words.append(f"--{key.replace('_', '-')} {cfg[key]}")
    return " ".join(words)


def _commands(training: dict) -> str:
    """The command lines that made this checkpoint, oldest first."""
    chain, node = [], training
    while node:
        chain.insert(0, node.get("config") or {})
        node = node.get("init_training")
    lines = []
    for cfg in chain:
        command = f"`{_train_command(cfg)}`"
        is_make_train = not cfg.get("init") and cfg.get("steps") == 1500 and not cfg.get("stride")
        lines.append(f"`make train` (= {command})" if is_make_train else command)
    lines.append("`python -m training.scorecard --checkpoint runs/<name>/best --out checkpoints/default`")
    return "- Commands, in order: " + ", then\n  ".join(lines) + "."


def _stages(init: dict | None) -> str:
    """One line per earlier stage of a fine-tuned checkpoint."""
    lines = []
    while init:
        wall = (init.get("wall_seconds") or 0) / 60
        lines.append(f"- Started from {init.get('model_version')}: {init.get('step')} steps, "
                     f"{wall:.1f} min on {json.dumps(init.get('hardware'))}.\n")
        init = init.get("init_training")
    return "".join(lines)


def model_card(manifest: dict, scores: dict, step_minutes: int, n_windows: int, members: int, *,
               guidance: float = 1.0, steps: int = 20, matching: str = "cdf", advection: str = "bulk") -> str:
    training = manifest["training"]
    cfg, data = training["config"], training["data"]
    leads = [i for i in (5, 11) if i < len(scores["ensemble"]["csi"])]
    rows = "\n".join(
        f"| {name} | " + " | ".join(
            f"{scores[name]['csi'][i]:.3f} | {scores[name]['crps'][i]:.3f}" for i in leads) + " |"
        for name in scores)
    commands = _commands(training)
    frame = ("; the last stage cut every window along its own bulk motion (`--advection bulk`, "
             "the frame the service forecasts in)" if cfg.get("advection") == "bulk" else "")
    motion = (f", and a random added motion of up to {cfg['motion_kmh']} km/h (`--motion-kmh`)"
              if cfg.get("motion_kmh") else "")
    stages = _stages(training.get("init_training"))
    heads = " | ".join(f"CSI 1 mm/h @{(i + 1) * step_minutes} min | CRPS @{(i + 1) * step_minutes} min"
                       for i in leads)
    return f"""# Default model: {manifest['model_version']}

STLDM, preset `{manifest['preset']}` ({manifest['parameters']:,} parameters), {cfg['t_in']} -> \
{cfg['t_out']} frames of {cfg['size']} x {cfg['size']} cells of {cfg['cell_km']} km at \
{cfg['step_minutes']}-minute steps. Pixels: HKO-7 convention `(dBZ + 10) / 70`, Marshall-Palmer \
Z = 200 R^1.6 (`config.json`, `transform`).

## Training
{commands}
- Data: {', '.join(Path(f).name for f in data.get('files', []))} (MRMS files skipped: their
  2-minute step does not divide 5 minutes). Windows: {data.get('windows_train')} training,
  {data.get('windows_val')} validation ({json.dumps(data.get('windows_per_file', {}))}); split by
  time blocks, no frame in both; flips and rotations for training{motion}{frame}.
- Recipe: strategy {cfg['strategy']}, {training['step']} steps of batch {cfg['batch_size']},
  AdamW lr {cfg['lr']} (warm-up {cfg['warmup_steps']}, cosine to {cfg['min_lr']}), weight decay
  {cfg['weight_decay']}, clipping {cfg['grad_clip']}, EMA {cfg['ema_decay']}, seed {cfg['seed']}.
- Wall time: {training['wall_seconds'] / 60:.1f} min on {json.dumps(training['hardware'])}.
{stages}- Checkpoint: the lowest validation loss of the run.

## Validation scores ({n_windows} windows, {members} members, {steps} DDIM steps, guidance {guidance}, \
matching {matching}, advection {advection})

Scored on the validation windows only (never used for gradient steps; they did select this
checkpoint among the run's saves). CSI counts every member; CRPS is the fair ensemble CRPS in
mm/h (the MAE for single forecasts). Higher CSI and lower CRPS are better. Extrapolation is
pysteps' Lucas-Kanade motion with semi-Lagrangian advection of the last frame (when pysteps is
installed), the classical reference a learned model should approach.

| forecast | {heads} |
|---|{'---|' * (2 * len(leads))}
{rows}

These few windows from one KNMI event are a sanity check, not a verification: see
`nowcast evaluate` for the comparison with pysteps on held-out events.

## Licences
Trained on data from the Finnish Meteorological Institute (FMI), CC BY 4.0, and KNMI (Royal
Netherlands Meteorological Institute), CC BY 4.0; modified.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.scorecard", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--stride", type=int, default=None,
                        help="window spacing in cells for the scored windows (default: the run's)")
    parser.add_argument("--matching", choices=MATCHINGS, default="cdf",
                        help="probability matching of the members (as the service delivers them)")
    parser.add_argument("--advection", choices=ADVECTIONS, default="bulk",
                        help="forecast in a frame moving with the rain (as the service delivers them)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance w")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    manifest = read_manifest(args.checkpoint)
    earlier = _init_training(manifest)
    if earlier:
        manifest["training"]["init_training"] = earlier
    windows, step = validation_windows(manifest, model.config.transform, args.stride)
    extrapolation = importlib.util.find_spec("pysteps") is not None
    if not extrapolation:
        log.warning("pysteps is not installed (pip install 'nowcast[eval]'): no extrapolation row")
    with torch.inference_mode():
        scores = score(model, windows, members=args.members, matching=args.matching,
                       guidance=args.guidance, steps=args.steps, advection=args.advection,
                       extrapolation=extrapolation)
    if args.out.resolve() != args.checkpoint.resolve():
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(args.checkpoint, args.out, ignore=shutil.ignore_patterns("training_state.pt"))
    manifest["scores"] = {"validation_windows": len(windows), "members": args.members,
                          "matching": args.matching, "advection": args.advection,
                          "guidance": args.guidance, "steps": args.steps,
                          "threshold_mm_h": 1.0, "lead_minutes": [(i + 1) * step for i in range(len(
                              scores["ensemble"]["csi"]))], **scores}
    (args.out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(model_card(manifest, scores, step, len(windows), args.members,
                                                       guidance=args.guidance, steps=args.steps,
                                                       matching=args.matching, advection=args.advection))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
