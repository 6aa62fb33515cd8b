"""Train STLDM: ``nowcast train`` or ``python -m training.train``, also under ``torchrun``.

Reads top to bottom: arguments -> data -> model -> optimiser -> loop -> validation ->
checkpoint. The recipe is STLDM.md section 5 (AdamW 1e-4, weight decay 0.01, warm-up from
0.1 x, cosine to 1e-6, batch 4, clipping 1.0, no EMA) with its length cut to what a 2-core
CPU does in under an hour: the small preset takes about 1.8 s a step at batch 4 and 128 x 128
with 2 threads, so 1500 steps (150 of warm-up) take about 46 minutes, and ``max_minutes=55``
stops a slower (shared) machine cleanly. ``--steps 200000 --warmup-steps 2000 --max-minutes 0``
is the paper's run.

Outputs in ``<out>`` (default ``runs/<name>``): ``log.jsonl``, the checkpoint folders ``last``
(every validation and at the end, with ``training_state.pt`` for ``--resume``) and ``best``
(lowest validation loss). Each manifest holds the resolved config, step, wall time, hardware,
data summary and the last validation metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model.checkpoint import load_checkpoint
from model.config import STLDMConfig
from model.stldm import STLDM
from radar.split import SplitRule
from training.config import SELECTIONS, SYNTHETIC_WINDOWS, TrainConfig, config_from_args, parse_options
from training.distributed import agree, gather_rng, setup, teardown
from training.ema import EMA
from training.ensemble import ensemble_crps
from training.logging_utils import JsonlLog, hardware_summary, rounded
from training.objective import apply_strategy, stldm_loss
from training.schedule import lr_at, param_groups
from training.state import (
    ResumableSampler,
    load_partial,
    load_state,
    resumable_folder,
    save_folder,
    seed_everything,
    set_rng_state,
)
from training.validation import validate

log = logging.getLogger(__name__)


class LossModule(nn.Module):
    """The objective as a module so that DDP sees the forward pass and syncs the gradients.

    With ``ensemble_weight`` > 0 the total adds that times the ensemble objective
    (:func:`training.ensemble.ensemble_crps` with the keyword arguments ``ensemble``, logged as
    ``ensemble``)."""

    def __init__(self, model: STLDM, strategy: str, pixel_frames: int = 0, *, ensemble_weight: float = 0.0,
                 ensemble: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model, self.strategy, self.pixel_frames = model, strategy, pixel_frames
        self.ensemble_weight, self.ensemble = ensemble_weight, ensemble or {}

    def forward(self, x, y, valid, step) -> dict[str, torch.Tensor]:
        terms = vars(stldm_loss(self.model, x, y, strategy=self.strategy, valid=valid, step=step,
                                pixel_frames=self.pixel_frames))
        if self.ensemble_weight:
            ensemble = ensemble_crps(self.model, x, y, valid=valid, step=step, pixel_frames=self.pixel_frames,
                                     **self.ensemble)
            terms = {**terms, "total": terms["total"] + self.ensemble_weight * ensemble, "ensemble": ensemble}
        return terms


def train(config: TrainConfig, *, datasets: tuple[Dataset, Dataset] | None = None) -> Path:
    """Run (or resume) training; returns the output folder ``config.out`` resolved.

    ``datasets`` = (train, validation) replaces the data step (tests, notebooks); items are
    dicts with "x" (T_in, H, W), "y" (T_out, H, W) float pixels in [0, 1], "valid"
    (T_in + T_out, H, W) bool and, optionally, "step_minutes" (int scalar tensor).
    """
    started = time.monotonic()
    # -- arguments, processes, devices
    world, rank, device = setup(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    config = config.resolved(device)
    if datasets is not None:
        config = dataclasses.replace(config, data=())
    out, main_process = Path(config.out), rank == 0
    resume_from = resumable_folder(out) if config.resume else None
    if config.resume and resume_from is None:
        log.warning("--resume: nothing to resume in %s, starting from step 0", out)
    seed_everything(config.seed + rank)  # DDP broadcasts rank 0's initial weights
    autocast = config.bf16 and device.type == "cuda"

    # -- data (the model config comes first: it owns the pixel transform)
    model_config = resolve_model_config(config, resume_from)
    config = dataclasses.replace(config, preset=model_config.preset)
    train_ds, val_ds, data_summary = build_data(config, model_config, datasets)

    # -- model and optimiser
    model = STLDM(model_config)
    # verified weights; the frame size may differ from the checkpoint's
    if resume_from is not None:
        model.load_state_dict(load_checkpoint(resume_from).state_dict())
    elif config.init:  # --options may add or widen tensors: copy what fits
        init = load_checkpoint(config.init)
        counts = load_partial(model, init.state_dict())
        if model_config.options.translator_residual and not init.config.options.translator_residual:
            # the copied mean head predicted whole latents: restart it at persistence
            model.translator.zero_mean_output()
            log.info("--init %s: translator_residual, the translator's mean head starts at zero "
                     "(first estimate = last context latent)", config.init)
        log.info("--init %s: %d tensors copied, %d widened (new input channels zero), %d new, "
                 "%d dropped", config.init, counts["copied"], counts["widened"], counts["new"],
                 counts["dropped"])
    model.to(device).train()
    apply_strategy(model, config.strategy)
    optimiser = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    ema = EMA(model, config.ema_decay) if config.ema_decay else None
    step, best, wall_before = 0, float("inf"), 0.0
    if resume_from is not None:
        state = load_state(resume_from)
        if ema is not None:  # the folder holds the EMA weights; the raw ones are in the state
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimizer"])
        step, best, wall_before = state["step"], state["best_val"], state["wall_seconds"]
        if len(state["rng"]) == world:
            set_rng_state(state["rng"][rank])
        log.info("resumed %s at step %d", resume_from, step)
    # find_unused_parameters: the deepest condition conv is kept for the published layout but
    # never used (STLDM.md 7.5), so its gradients never arrive.
    loss_module = LossModule(model, config.strategy, config.pixel_frames,
                             ensemble_weight=config.ensemble_weight,
                             ensemble={"members": config.ensemble_members, "steps": config.ensemble_steps,
                                       "blend_minutes": config.ensemble_blend,
                                       "detail_minutes": config.ensemble_detail,
                                       "guidance": config.ensemble_guidance,
                                       "blend_spread": config.ensemble_blend_spread,
                                       "estimate_minutes": config.ensemble_estimate,
                                       "motion_spread": config.ensemble_motion_spread,
                                       "cell_km": config.cell_km})
    ddp = (torch.nn.parallel.DistributedDataParallel(
        loss_module, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True) if world > 1 else loss_module)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if main_process:
        log.info("%s: %s (%s parameters, %s trainable), %s train / %s val windows, device %s",
                 out, config.strategy, f"{model.num_parameters():,}",
                 f"{sum(p.numel() for p in trainable):,}", len(train_ds), len(val_ds), device)

    # -- loop
    weights = train_ds.balance_weights() if config.balance and hasattr(train_ds, "balance_weights") else None
    sampler = ResumableSampler(train_ds, seed=config.seed, world_size=world, rank=rank,
                               start=step * config.batch_size, weights=weights)
    batches = iter(DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                              num_workers=config.num_workers, pin_memory=device.type == "cuda",
                              generator=torch.Generator().manual_seed(config.seed)))
    run_log = JsonlLog(out / "log.jsonl")
    hardware = hardware_summary(device, world)
    bar = tqdm(total=config.steps, initial=step, disable=not main_process, dynamic_ncols=True,
               desc=config.name)
    window_start, window_steps = time.perf_counter(), 0
    while step < config.steps:
        batch = next(batches)
        x, y, valid = (batch[k].to(device, non_blocking=True) for k in ("x", "y", "valid"))
        step_minutes = batch["step_minutes"].to(device).float() if "step_minutes" in batch else None
        lr = lr_at(step, lr=config.lr, warmup_steps=config.warmup_steps, steps=config.steps,
                   min_lr=config.min_lr)
        for group in optimiser.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            terms = ddp(x, y, valid, step_minutes)
        if not torch.isfinite(terms["total"]):
            raise FloatingPointError(f"non-finite loss at step {step}: {rounded(floats(terms))}")
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip or float("inf"))
        optimiser.step()
        if ema is not None:
            ema.update(model)
        step, window_steps = step + 1, window_steps + 1
        losses = rounded(floats(terms))
        bar.update(1)
        bar.set_postfix(loss=f"{losses['total']:.4f}", diffusion=f"{losses['diffusion']:.4f}",
                        recon=f"{losses['vae'] + losses['constraint']:.4f}", lr=f"{lr:.2e}", refresh=False)
        if main_process and (step % config.log_every == 0 or step == config.steps):
            seconds = time.perf_counter() - window_start
            run_log.write("train", step, lr=lr, **losses, grad_norm=float(grad_norm),
                          seconds=round(seconds, 3),
                          samples_per_s=round(window_steps * config.batch_size * world / seconds, 3))
            window_start, window_steps = time.perf_counter(), 0
        out_of_time = agree(config.max_minutes > 0 and time.monotonic() - started > 60 * config.max_minutes,
                            world, device)
        if step % config.eval_every and step < config.steps and not out_of_time:
            continue

        # -- validation and checkpoint (every eval_every steps, at the end, and out of time)
        rng = gather_rng(world)  # collective: every rank takes part
        if main_process:
            final = ema.module if ema is not None else model
            metrics = rounded(validate(
                final, DataLoader(val_ds, batch_size=config.batch_size, num_workers=config.num_workers,
                                  shuffle=len(val_ds) > 0,  # a fixed, seeded subset every time
                                  generator=torch.Generator().manual_seed(config.seed)),
                strategy=config.strategy, max_batches=config.val_batches, members=config.val_members,
                steps=config.val_steps, skill_batches=config.val_skill_batches, seed=config.seed,
                device=device, autocast=autocast))
            model.train()
            apply_strategy(model, config.strategy)  # frozen parts back to eval mode
            wall = wall_before + time.monotonic() - started
            run_log.write("val", step, **metrics, wall_seconds=round(wall, 1))
            extra = {"training": {"config": dataclasses.asdict(config), "step": step,
                                  "wall_seconds": round(wall, 1), "hardware": hardware,
                                  "data": data_summary},
                     "validation": metrics}
            chosen_by = SELECTIONS[config.select]
            improved = chosen_by in metrics and metrics[chosen_by] < best
            best = metrics[chosen_by] if improved else best
            state = {"step": step, "optimizer": optimiser.state_dict(), "rng": rng, "best_val": best,
                     "wall_seconds": wall}
            if ema is not None:
                state.update(model=model.state_dict(), ema=ema.state_dict())
            save_folder(final, out / "last", extra=extra, state=state)
            if improved:
                save_folder(final, out / "best", extra=extra)
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if world > 1:
            torch.distributed.barrier()
        if out_of_time and step < config.steps:
            log.warning("max_minutes=%s reached at step %d of %d: saved %s; continue with --resume",
                        config.max_minutes, step, config.steps, out / "last")
            break
    bar.close()
    teardown(world)
    return out


def resolve_model_config(config: TrainConfig, resume_from: Path | None) -> STLDMConfig:
    """The preset's config, or the config of the checkpoint resumed or fine-tuned from, with
    ``config.options`` applied (a resumed run must keep its checkpoint's options)."""
    source = resume_from or (Path(config.init) if config.init else None)
    if source is None:
        model_config = STLDMConfig.preset_named(config.preset, t_in=config.t_in, t_out=config.t_out)
    else:
        model_config = STLDMConfig.from_dict(json.loads((source / "config.json").read_text()))
        if (model_config.t_in, model_config.t_out) != (config.t_in, config.t_out):
            raise ValueError(f"{source} is a {model_config.t_in} -> {model_config.t_out} model; "
                             f"got --t-in {config.t_in} --t-out {config.t_out}")
    options = parse_options(config.options, model_config.options)
    if resume_from is not None and options != model_config.options:
        raise ValueError(f"--options {config.options!r} differ from the options of {resume_from}; "
                         "a resumed run keeps them (start a new run with --init to change them)")
    return dataclasses.replace(model_config, options=options)


def build_data(config: TrainConfig, model_config: STLDMConfig,
               datasets: tuple[Dataset, Dataset] | None) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """(train, validation, summary) from ``datasets``, synthetic rain or the radar event files."""
    if datasets is not None:
        train_ds, val_ds = datasets
        source: dict[str, Any] = {"source": "given"}
    elif config.synthetic:
        from training.synthetic import SyntheticRain

        shape = {"t_in": config.t_in, "t_out": config.t_out, "size": config.size}
        train_ds = SyntheticRain(SYNTHETIC_WINDOWS[0], **shape, seed=config.seed)
        val_ds = SyntheticRain(SYNTHETIC_WINDOWS[1], **shape, seed=config.seed + 1)
        source = {"source": "synthetic"}
    else:
        from training.data import build_splits

        files = event_files(config.data)
        steps = training_steps(config, model_config)
        splits = build_splits(
            files, t_in=config.t_in, t_out=config.t_out, steps=steps, size=config.size,
            cell_km=config.cell_km, transform=model_config.transform, rule=split_rule(config),
            min_leads=config.min_leads, min_coverage=config.min_coverage,
            min_rain_fraction=config.min_rain_fraction, stride=config.stride or None,
            augment=config.augment, motion_kmh=config.motion_kmh, advection=config.advection,
            motion_cache=Path(config.motion_cache))
        train_ds, val_ds = splits["train"], splits["val"]
        source = {"source": "radar", "files": [str(f) for f in files], "steps": list(steps),
                  "split": split_rule(config).to_dict(),
                  "windows_per_file": {"train": train_ds.counts(), "val": val_ds.counts()},
                  "windows_per_step": {"train": train_ds.step_counts(), "val": val_ds.step_counts()}}
    if len(train_ds) < config.batch_size:
        raise ValueError(f"{len(train_ds)} training windows are fewer than batch_size {config.batch_size}")
    return train_ds, val_ds, {**source, "windows_train": len(train_ds), "windows_val": len(val_ds)}


def event_files(data: tuple[str, ...]) -> list[Path]:
    """The event files of ``data`` (files, or folders of ``*.nc`` or packed ``*.nc.npz``);
    ``ValueError`` when none."""
    files = [f for p in map(Path, data)
             for f in (sorted([*p.glob("*.nc"), *p.glob("*.nc.npz")]) if p.is_dir() else [p])]
    if not files:
        raise ValueError(f"no radar event files (*.nc, or *.nc.npz packed by radar.pack) in {list(data)}")
    return files


def training_steps(config: TrainConfig, model_config: STLDMConfig) -> tuple[int, ...]:
    """The steps (minutes) to cut windows at: ``--step-minutes``, else every step the model
    serves, else 5 (a model without a step embedding)."""
    if config.step_minutes:
        model_config.check_step(config.step_minutes if model_config.step_minutes else None)
        return (config.step_minutes,)
    return model_config.step_minutes or (5,)


def split_rule(config: TrainConfig) -> SplitRule:
    """The hold-out rule of ``config`` (its split flags)."""
    return SplitRule(val_fraction=config.val_fraction, seed=config.seed, test_minutes=config.test_minutes,
                     block_minutes=config.block_minutes, test_region=config.test_region,
                     val_region=config.val_region)


def floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = train(config_from_args(argv))
    log.info("done: %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
