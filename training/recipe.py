"""The recipe of the default model, stage by stage, on a CPU (``make train``) or a GPU
(``make train-gpu``).

``python -m training.recipe --name NAME --minutes M`` runs, each stage a ``nowcast train`` run
under ``runs/NAME-*`` with its own budget (a share of ``M``):

1. ``vae`` (20 % of the time): the VAE alone on its reconstruction of every frame (the VAE part
   of the paper's strategy A) at a high learning rate;
2. ``main`` (55 %): translator and denoiser trained in the dense Lagrangian frame
   (``--advection dense``) on the stage-1 VAE, end to end (the VAE keeps learning; six random
   frames per window for the pixel-space terms, ``--pixel-frames 6``) on small windows
   (``--size``, 64 cells: fast steps);
3. ``full`` (15 %): the same training continued on windows of the size the service forecasts
   (``--full-size``, 128 cells; a quarter of the windows per step, a third of the learning rate),
   so that the translator and the denoiser see the latent grid they are served on (README,
   training step 12); ``--full-size 0`` leaves it out;
4. ``ensemble`` (10 %): the translator and the denoiser (the VAE frozen) on the ensemble objective
   as well (``--ensemble-weight 1``, :mod:`training.ensemble`: the fair CRPS of members sampled,
   blended and moved by their own motion perturbations as the service makes them), on windows of
   the last stage's size at a third of the main stage's learning rate (README, training step
   19); its last step is scored, the validation loss not being what it lowers;
   ``--ensemble-steps 0`` leaves it out;
5. the scorecard (the rest): the defaults (motion perturbations, one size per radar time step
   where that calibrates or scores better, ``blend_spread``, DDIM steps and
   the share of them that apply guidance: among the calibrated combinations, or the least
   miscalibrated when none is, ``--select``, the fewest denoiser
   passes within ``--steps-tolerance`` of the best CRPS) chosen on the validation windows, the
   checkpoint written to ``--out`` with its model card.

With ``--init CHECKPOINT`` (``make train-gpu INIT=checkpoints/default``) the recipe continues a
trained checkpoint instead: stages 1 and 2 are left out, stage 3 starts from it, and stages 3 and
4 share the training budget in their proportions.

The steps of each stage are set by ``--vae-steps`` and ``--steps``; the budget only stops a
stage that runs late, validating and saving as it stops (``--max-minutes``). With ``--device
cuda`` it trains under bf16 autocast (``nowcast train``'s default there) with ``--batch-size``
windows per step. Every stage's command is logged and recorded in the checkpoints' manifests,
so the card lists the stages. With ``--no-scorecard`` the last stage's checkpoint
(:func:`scored_checkpoint`) is copied to ``--out`` unscored, to be scored where pysteps is
installed (a lent GPU machine has none: ``make train-gpu``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from model.checkpoint import read_manifest, write_manifest
from model.options import DETAILS, flag
from training.scorecard import SELECTIONS

log = logging.getLogger(__name__)

STAGE_SHARES = {"vae": 0.2, "main": 0.45, "full": 0.15, "ensemble": 0.1}  # the scorecard gets the rest


def stage_arguments(args: argparse.Namespace) -> dict[str, list[str]]:
    """The ``nowcast train`` arguments of the training stages, in order."""
    common = ["--device", args.device, "--threads", str(args.threads), "--seed", str(args.seed),
              "--motion-cache", str(args.motion_cache), "--data", *map(str, args.data)]

    def shape(size: int, batch: int) -> list[str]:
        return ["--size", str(size), "--stride", str(size // 2), "--batch-size", str(batch)]

    def start(stage: str | None) -> Path:
        """Where a stage starts: the best checkpoint of the stage before it, or ``--init``."""
        return Path(args.init) if stage is None else Path("runs") / f"{args.name}-{stage}" / "best"

    # with --init the stages left share the budget of the training stages in their proportions
    present = ("full",) * bool(args.full_size) + ("ensemble",) * bool(args.ensemble_steps)
    if args.init and not present:
        raise ValueError("--init leaves out the vae and main stages: keep --full-size or --ensemble-steps")
    scale = sum(STAGE_SHARES.values()) / sum(STAGE_SHARES[s] for s in present) if args.init else 1.0

    def dense(stage: str, init: str | None, steps: int, lr: str, size: int, batch: int, evals: int, *,
              strategy: str = "end_to_end", warmup: int = 20, extra: tuple[str, ...] = ()) -> list[str]:
        """``strategy`` in the dense frame from stage ``init``'s best checkpoint (None: ``--init``),
        validated ``evals`` times, ``1 / warmup`` of the steps warming up, with the ``extra``
        arguments."""
        return ["--name", f"{args.name}-{stage}", "--init", str(start(init)), *extra,
                "--strategy", strategy, "--pixel-frames", "6", "--advection", "dense",
                "--steps", str(steps), "--warmup-steps", str(max(1, steps // warmup)), "--lr", lr,
                "--ema-decay", "0.998", "--eval-every", str(max(1, steps // evals)),
                "--max-minutes", f"{scale * STAGE_SHARES[stage] * args.minutes:.2f}", *shape(size, batch),
                *common]

    vae = ["--name", f"{args.name}-vae", "--strategy", "vae", "--options", "intensity_loss=true",
           "--steps", str(args.vae_steps), "--warmup-steps", str(max(1, args.vae_steps // 20)),
           "--lr", "1e-3", "--eval-every", str(max(1, args.vae_steps // 4)), "--val-members", "0",
           "--max-minutes", f"{STAGE_SHARES['vae'] * args.minutes:.2f}", *shape(args.size, args.batch_size),
           *common]
    stages = {} if args.init else {  # the checkpoint given has been through these
        "vae": vae,
        "main": dense("main", "vae", args.steps, str(args.lr), args.size, args.batch_size, evals=8)}
    # each stage starts from the one before it (None: the first stage left starts from --init)
    if args.full_size:  # the same pixels per step as the main stage
        batch = max(1, args.batch_size * args.size ** 2 // args.full_size ** 2)
        lr = f"{args.lr / 3:.3g}"
        stages["full"] = dense("full", next(reversed(stages), None), args.full_steps, lr, args.full_size,
                               batch, evals=4)
    if args.ensemble_steps:  # from the last stage's best (or --init), on its windows
        objective = ("--ensemble-weight", "1", "--ensemble-motion-spread", str(args.ensemble_motion_spread))
        stages["ensemble"] = dense("ensemble", next(reversed(stages), None), args.ensemble_steps,
                                   f"{args.lr / 3:.3g}", args.full_size or args.size,
                                   max(2, args.batch_size // 2), evals=2, strategy="frozen_vae", warmup=10,
                                   extra=objective)
    return stages  # bf16 autocast is the default on CUDA


def scored_checkpoint(stages: dict[str, list[str]], name: str) -> Path:
    """The checkpoint of the last stage that the scorecard scores: its best (lowest validation
    loss), or for the ensemble stage its last step (the loss is not what that stage lowers)."""
    last_stage = list(stages)[-1]
    return Path("runs") / f"{name}-{last_stage}" / ("last" if last_stage == "ensemble" else "best")


def run(args: argparse.Namespace) -> Path:
    """Run the stages and the scorecard; returns the checkpoint folder ``args.out``."""
    from training import scorecard
    from training.train import main as train_main

    stages = stage_arguments(args)
    for stage, argv in stages.items():
        log.info("stage %s: nowcast train %s", stage, " ".join(argv))
        if train_main(argv) != 0:
            raise RuntimeError(f"stage {stage} failed")
    scored = scored_checkpoint(stages, args.name)
    last_stage = scored.parent
    if args.no_scorecard:  # e.g. on a GPU machine without pysteps: score it where pysteps is
        shutil.copytree(scored, args.out, dirs_exist_ok=True,  # no optimiser state: 16 MB come back
                        ignore=shutil.ignore_patterns("training_state.pt"))
        shutil.copy(last_stage / "log.jsonl", Path(args.out) / "train_log.jsonl")
        # the stages before it travel in its manifest, for the card of wherever it is scored
        manifest = read_manifest(args.out)
        manifest["training"]["init_training"] = scorecard.earlier_training(manifest)
        write_manifest(args.out, manifest)
        return Path(args.out)
    card = ["--checkpoint", str(scored), "--out", str(args.out), "--members", str(args.members),
            "--steps", *[str(v) for v in args.ddim_steps], "--steps-tolerance", str(args.steps_tolerance),
            "--motion-spread", *[str(v) for v in args.motion_spread],
            "--guidance", *[str(v) for v in args.guidance],
            "--guidance-share", *[str(v) for v in args.guidance_share],
            "--detail-lifetime", *[str(v) for v in args.detail_lifetime],
            "--detail", *args.detail,
            "--extrapolation-lifetime", *[str(v) for v in args.extrapolation_lifetime],
            "--blend-spread", *[str(v) for v in args.blend_spread],
            "--estimate-lifetime", *[str(v) for v in args.estimate_lifetime],
            "--antithetic", *[str(v).lower() for v in args.antithetic],
            "--select", args.select, "--threads", str(args.threads), "--seeds", str(args.scorecard_seeds)]
    if args.max_windows:
        card += ["--max-windows", str(args.max_windows)]
    if args.motion_spread_by_step:
        card.append("--motion-spread-by-step")
    log.info("scorecard: python -m training.scorecard %s", " ".join(card))
    scorecard.main(card)
    shutil.copy(last_stage / "log.jsonl", Path(args.out) / "train_log.jsonl")
    return Path(args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="recipe", help="runs/<name>-vae, -main, -full and -ensemble")
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("../shared/radar/events")])
    parser.add_argument("--out", type=Path, default=Path("runs/recipe-final"), help="the scored checkpoint")
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-clock budget of all stages")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from this checkpoint (e.g. checkpoints/default): the vae and main "
                        "stages are left out, the full and ensemble stages start from it and share the "
                        "training budget in their proportions")
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=3000, help="steps of the main stage")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the main stage")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="training window side in cells")
    parser.add_argument("--full-size", type=int, default=128,
                        help="window side of the last stage, the size the service forecasts (0: none)")
    parser.add_argument("--full-steps", type=int, default=1000, help="steps of the last stage")
    parser.add_argument("--ensemble-steps", type=int, default=250,
                        help="steps of the ensemble objective's stage (0: none)")
    parser.add_argument("--ensemble-motion-spread", type=float, default=2.0,
                        help="size of the motion perturbations of that stage's members (the service's "
                        "motion_spread; larger than the served size, so that the denoiser leaves the "
                        "spread of the rain's motion to them: README, training step 20)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=int, default=10, help="ensemble size of the scorecard")
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[5, 10],
                        help="DDIM steps the scorecard tries")
    parser.add_argument("--steps-tolerance", type=float, default=0.005,
                        help="scorecard: the fewest denoiser passes (DDIM steps and guided steps) "
                        "within this relative CRPS of the best")
    parser.add_argument("--guidance", type=float, nargs="+", default=[2.0],
                        help="guidance scales the scorecard tries (the shipped model's)")
    parser.add_argument("--guidance-share", type=float, nargs="+", default=[1.0, 0.4],
                        help="shares of the DDIM steps, the noisiest first, that apply guidance, that "
                        "the scorecard tries")
    parser.add_argument("--motion-spread", type=float, nargs="+", default=[1.0, 1.5, 2.0],
                        help="motion perturbation sizes the scorecard tries")
    parser.add_argument("--motion-spread-by-step", action=argparse.BooleanOptionalAction, default=True,
                        help="the scorecard also weighs one of those sizes per radar time step "
                        "(training.scorecard --motion-spread-by-step; README, training step 21)")
    parser.add_argument("--select", choices=SELECTIONS, default="calibrated",
                        help="how the scorecard chooses (training.scorecard --select)")
    parser.add_argument("--detail-lifetime", type=float, nargs="+", default=[60.0],
                        help="detail lifetimes (minutes) the scorecard tries (the shipped model's)")
    parser.add_argument("--detail", choices=DETAILS, nargs="+", default=["renew"],
                        help="how the detail enters the members, to try (fade, renew; model/detail.py)")
    parser.add_argument("--extrapolation-lifetime", type=float, nargs="+", default=[90.0],
                        help="extrapolation lifetimes (minutes) the scorecard tries (the shipped model's)")
    parser.add_argument("--blend-spread", type=float, nargs="+", default=[0.0, 0.5],
                        help="shares of the members' own spread kept in that blend that the scorecard "
                        "tries (model.sampler.blend_members; 0.5 the shipped model's)")
    parser.add_argument("--estimate-lifetime", type=float, nargs="+", default=[180.0],
                        help="minutes over which that blend's target goes from the last frame to the "
                        "first estimate, that the scorecard tries (model.sampler.blend_target; 0: the "
                        "last frame; 180 the shipped model's)")
    parser.add_argument("--antithetic", type=flag, nargs="+", default=[True],
                        help="true: members in mirrored pairs, false: each its own draws, to try in the "
                        "scorecard (model.pairs; true the shipped model's)")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="scorecard: about this many windows, evenly spaced")
    parser.add_argument("--scorecard-seeds", type=int, default=1,
                        help="scorecard: seeds per validation window, pooled (training.scorecard --seeds)")
    parser.add_argument("--motion-cache", type=Path, default=Path("runs/cache/motion"),
                        help="motion fields of the windows (computed where missing: needs pysteps)")
    parser.add_argument("--no-scorecard", action="store_true",
                        help="copy the last stage's checkpoint to --out unscored (run training.scorecard "
                        "later)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = run(build_parser().parse_args(argv))
    log.info("done: %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
