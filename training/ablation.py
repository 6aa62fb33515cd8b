"""Ablation of the SSLDM-ISI options: ``python -m training.ablation``.

Every variant fine-tunes the same init checkpoint (default: the shipped model) with one option
set added, with the same seed, data, steps, learning rate and wall-clock budget, then
``nowcast evaluate`` scores its final weights (``<variant>/last``: the same number of steps for
everyone, no selection on the 18 validation windows) on held-out windows against persistence.
The baseline (no option) is fine-tuned for the same budget too, so that "more training" is not
mistaken for "a better option".

Reads top to bottom: arguments -> variants -> per variant (train, evaluate, summary) ->
collect -> table, decision -> ``ablation.json`` and the marked block of ``docs/ABLATION.md``.
A variant whose ``<run-dir>/<variant>/variant.json`` exists is skipped unless ``--force``
(an interrupted ablation resumes); a trained variant whose evaluation is missing is only
evaluated. The subprocesses go through ``runner(argv, log_path, threads)`` so tests replace it.

Decision
    An option "wins clearly" when, at both reported lead times, its CSI at 1 mm/h is more than
    ``margin`` (relative, default 5 %) above the baseline's and its CRPS more than ``margin``
    below, and its sampling time per ensemble is at most ``1 + max_slowdown`` (default 1.25)
    times the baseline's. Otherwise the default stays STLDM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from training.config import DEFAULT_EVENTS, REPO_ROOT, parse_options
from verification.report import report_leads

log = logging.getLogger(__name__)

VARIANTS = {
    "baseline": "",
    "temporal_shift": "temporal_shift=true",
    "sts_posbias": "attention_order=sts,temporal_position_bias=true",
    "stc_translator": "translator_kind=stc",
    "dual_condition": "dual_condition=true",
    "intensity": "intensity_loss=true,exceedance_condition=true",
}
BASELINE = "baseline"
EVAL_METHODS = "stldm,persistence"  # pysteps extrapolation and STEPS are slow and option-blind
BEGIN, END = "<!-- ablation-results:begin -->", "<!-- ablation-results:end -->"
DEFAULT_DOCS = REPO_ROOT / "docs" / "ABLATION.md"
DEFAULT_INTRO = "# Ablation of the SSLDM-ISI options\n\nWritten by `python -m training.ablation`.\n"

Runner = Callable[[list[str], Path, int], None]


def select_variants(names: str) -> dict[str, str]:
    """``{name: options}`` of a comma list of variant names ("" or "all": every variant).

    The baseline always comes first: every other variant is compared with it.
    """
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted or wanted == ["all"]:
        return dict(VARIANTS)
    unknown = [n for n in wanted if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose among {', '.join(VARIANTS)} or all")
    return {n: VARIANTS[n] for n in VARIANTS if n in wanted}


def train_argv(args: argparse.Namespace, options: str, out: Path) -> list[str]:
    """``nowcast train`` arguments of one variant; ``--options`` only when there are options.

    Validation (loss terms only, no forecast) runs once, at the end or when out of time.
    """
    argv = ["train", "--name", f"ablation-{out.name}", "--data", *map(str, args.data),
            "--init", str(args.init), "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
            "--lr", str(args.lr), "--max-minutes", str(args.max_minutes), "--seed", str(args.seed),
            "--threads", str(args.threads), "--device", args.device, "--eval-every", str(args.steps),
            "--val-members", "0", "--out", str(out)]
    return argv + (["--options", options] if options else [])


def evaluate_argv(args: argparse.Namespace, checkpoint: Path, out: Path) -> list[str]:
    """``nowcast evaluate`` arguments: held-out events, STLDM and persistence only."""
    return ["evaluate", "--checkpoint", str(checkpoint), "--events", *map(str, args.events),
            "--members", str(args.members), "--max-windows", str(args.max_windows),
            "--seed", str(args.seed), "--threads", str(args.threads), "--methods", EVAL_METHODS,
            "--no-plots", "--out", str(out)]


def run_subprocess(argv: list[str], log_path: Path, threads: int) -> None:
    """Run ``nowcast <argv>`` with ``threads`` CPU threads; its output goes to ``log_path``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as out:
        code = subprocess.run([sys.executable, "-m", "cli.main", *argv], stdout=out,
                              stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, check=False).returncode
    if code:
        tail = log_path.read_text().splitlines()[-15:]
        raise RuntimeError(f"nowcast {argv[0]} exited with {code}; {log_path} ends:\n" + "\n".join(tail))


def method_metrics(scores: dict, method: str, picks: list[int]) -> dict[str, dict[str, float | None]]:
    """CSI at 1 and 5 mm/h (pool 1), CRPS and BSS at 1 mm/h of ``method`` at the leads ``picks``."""
    labels = [t["label"] for t in scores["thresholds"]]
    one, five = labels.index("1 mm/h"), labels.index("5 mm/h")
    s, leads = scores["scores"][method], scores["lead_minutes"]
    return {
        "csi_1": {str(leads[i]): s["csi"][0][one][i] for i in picks},
        "csi_5": {str(leads[i]): s["csi"][0][five][i] for i in picks},
        "crps": {str(leads[i]): s["crps"][i] for i in picks},
        "bss_1": {str(leads[i]): s["bss"][one][i] for i in picks},
    }


def run_variant(name: str, options: str, args: argparse.Namespace, runner: Runner) -> dict:
    """Train (unless done) and evaluate (unless done) one variant; returns its summary."""
    vdir = Path(args.run_dir) / name
    summary_path = vdir / "variant.json"
    if summary_path.is_file() and not args.force:
        log.info("%s: results in %s, skipped (--force reruns it)", name, summary_path)
        return json.loads(summary_path.read_text())
    if args.force and vdir.exists():
        shutil.rmtree(vdir)
    vdir.mkdir(parents=True, exist_ok=True)
    train_cmd = train_argv(args, options, vdir)
    if not (vdir / "train.json").is_file():
        (vdir / "log.jsonl").unlink(missing_ok=True)  # an interrupted run starts again
        start = time.monotonic()
        runner(train_cmd, vdir / "train.log", args.threads)
        (vdir / "train.json").write_text(json.dumps(
            {"command": shlex.join(["nowcast", *train_cmd]),
             "process_minutes": round((time.monotonic() - start) / 60, 2)}, indent=1) + "\n")
    checkpoint = vdir / "last"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    eval_cmd = evaluate_argv(args, checkpoint, vdir / "evaluate")
    (vdir / "evaluate" / "scores.json").unlink(missing_ok=True)  # never read a stale one
    start = time.monotonic()
    runner(eval_cmd, vdir / "evaluate.log", args.threads)
    evaluate_minutes = (time.monotonic() - start) / 60
    scores = json.loads((vdir / "evaluate" / "scores.json").read_text())
    picks = report_leads(scores["lead_minutes"])
    training = manifest.get("training", {})
    summary = {
        "variant": name, "options": options, "checkpoint": str(checkpoint),
        "commands": {"train": json.loads((vdir / "train.json").read_text())["command"],
                     "evaluate": shlex.join(["nowcast", *eval_cmd])},
        "parameters": manifest.get("parameters"), "steps_done": training.get("step"),
        "train_wall_minutes": round(training.get("wall_seconds", float("nan")) / 60, 2),
        "train_process_minutes": json.loads((vdir / "train.json").read_text())["process_minutes"],
        "evaluate_minutes": round(evaluate_minutes, 2), "hardware": training.get("hardware"),
        "windows": len(scores["windows"]), "members": scores["members"],
        "lead_minutes": [scores["lead_minutes"][i] for i in picks],
        "sampling_seconds": scores["timing"]["stldm_seconds_per_ensemble"],
        "stldm": method_metrics(scores, "stldm", picks),
        "persistence": method_metrics(scores, "persistence", picks),
    }
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _better(new: float | None, old: float | None, margin: float, *, higher: bool) -> bool:
    if new is None or old is None:
        return False
    return new > old * (1 + margin) if higher else new < old * (1 - margin)


def shortfalls(summaries: dict[str, dict], *, margin: float, max_slowdown: float) -> dict[str, list[str]]:
    """Per option variant with results, the criteria it misses (empty: it wins clearly)."""
    base = summaries[BASELINE]
    out = {}
    for name, s in summaries.items():
        if name == BASELINE or "error" in s:
            continue
        fails = [f"{key} @{lead} min" for lead in map(str, base["lead_minutes"])
                 for key, higher in (("csi_1", True), ("crps", False))
                 if not _better(s["stldm"][key].get(lead), base["stldm"][key].get(lead), margin,
                                higher=higher)]
        if not s["sampling_seconds"] or not base["sampling_seconds"]:
            fails.append("sampling time unknown")
        elif s["sampling_seconds"] > (1 + max_slowdown) * base["sampling_seconds"]:
            fails.append(f"sampling time +{s['sampling_seconds'] / base['sampling_seconds'] - 1:.0%}")
        out[name] = fails
    return out


def decide(summaries: dict[str, dict], *, margin: float, max_slowdown: float) -> tuple[list[str], str]:
    """(options that win clearly, the decision line); see the module docstring."""
    if "error" in summaries.get(BASELINE, {"error": ""}):
        return [], "Decision: no baseline result in this run, nothing decided; the default stays STLDM."
    base = summaries[BASELINE]
    misses = shortfalls(summaries, margin=margin, max_slowdown=max_slowdown)
    winners = [name for name, fails in misses.items() if not fails]
    leads = " and ".join(map(str, base["lead_minutes"]))
    rule = (f"beats the baseline on CSI 1 mm/h and CRPS at {leads} min by more than {margin:.0%} "
            f"(relative) and samples at most {max_slowdown:.0%} slower")
    if winners:
        return winners, f"Decision: {', '.join(winners)} wins clearly (it {rule}); consider it the default."
    return [], f"Decision: no option wins clearly (none {rule}); the default stays STLDM."


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def results_table(summaries: dict[str, dict]) -> str:
    """Markdown table: one row per variant's STLDM and one for persistence (the same windows)."""
    done = {n: s for n, s in summaries.items() if "error" not in s}
    if not done:
        return "No variant has results yet."
    leads = next(iter(done.values()))["lead_minutes"]
    keys = (("csi_1", "CSI 1 mm/h"), ("csi_5", "CSI 5 mm/h"), ("crps", "CRPS mm/h"), ("bss_1", "BSS 1 mm/h"))
    head = ["variant", "options"] + [f"{label} @{lead}" for _, label in keys for lead in leads]
    head += ["s / ensemble", "parameters", "train min", "steps"]
    rows = []
    for name, s in done.items():
        rows.append([name, f"`{s['options']}`" if s["options"] else "(STLDM)",
                     *(_fmt(s["stldm"][k].get(str(lead))) for k, _ in keys for lead in leads),
                     _fmt(s["sampling_seconds"], 2), f"{s['parameters']:,}", _fmt(s["train_wall_minutes"], 1),
                     str(s["steps_done"])])
    p = next(iter(done.values()))["persistence"]
    rows.append(["persistence", "last input frame",
                 *(_fmt(p[k].get(str(lead))) for k, _ in keys for lead in leads), "-", "-", "-", "-"])
    rows += [[name, f"failed: {s['error'][:80]}", *["-"] * (len(head) - 2)]
             for name, s in summaries.items() if "error" in s]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_docs(path: Path, block: str) -> None:
    """Replace the text between the markers of ``path`` with ``block``; keep everything else.

    A missing file gets a short intro; a file without markers gets them appended.
    """
    text = path.read_text() if path.is_file() else DEFAULT_INTRO
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    if END not in rest:
        raise ValueError(f"{path}: {END} must follow {BEGIN}")
    _, tail = rest.split(END, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{BEGIN}\n{block.strip()}\n{END}{tail}")


def results_block(summaries: dict[str, dict], decision: str, args: argparse.Namespace) -> str:
    """The generated part of ``docs/ABLATION.md``: settings, table, decision."""
    hardware = next((s["hardware"] for s in summaries.values() if s.get("hardware")), None)
    misses = ""
    if "error" not in summaries.get(BASELINE, {"error": ""}):
        misses = "\n".join(f"- {name}: " + (f"misses {', '.join(fails)}" if fails else "wins clearly")
                           for name, fails in shortfalls(summaries, margin=args.margin,
                                                         max_slowdown=args.max_slowdown).items())
    cost = ", ".join(f"{n} {s['train_process_minutes']:.1f} + {s['evaluate_minutes']:.1f}"
                     for n, s in summaries.items() if "error" not in s)
    return f"""## Results ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{args.run_dir}`)

Budget per variant: {args.steps} steps (warm-up {args.warmup_steps}) at lr {args.lr:g}, at most \
{args.max_minutes:g} min, seed {args.seed}, {args.threads} thread(s), from `{args.init}`. Scored: \
final weights (`last`), {args.max_windows} wettest held-out windows of \
{', '.join(Path(e).name for e in args.events)}, {args.members} members, 20 DDIM steps. \
Hardware: `{json.dumps(hardware)}` ({platform.machine()}). \
Minutes per variant (train process + evaluate): {cost or 'none'}.

{results_table(summaries)}

{decision}
{misses}
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.ablation", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Fine-tune the init checkpoint once per option set (same seed, data, steps, lr "
        "and minutes), score each on held-out windows with nowcast evaluate (stldm and persistence), "
        "and write ablation.json, a table and a decision.")
    p.add_argument("--variants", default="all", help=f"comma list among {', '.join(VARIANTS)}, or all")
    p.add_argument("--run-dir", type=Path, default=Path("runs/ablation"), help="one folder per variant in it")
    p.add_argument("--data", type=Path, nargs="+", default=[DEFAULT_EVENTS],
                   help="training event files or folders")
    p.add_argument("--init", type=Path, default=REPO_ROOT / "checkpoints" / "default",
                   help="checkpoint every variant fine-tunes")
    p.add_argument("--events", type=Path, nargs="+", default=sorted(DEFAULT_EVENTS.glob("mrms_*.nc")),
                   help="held-out evaluation events (default: the MRMS files, never trained on at 5 min)")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per variant")
    p.add_argument("--warmup-steps", type=int, default=4, help="linear warm-up steps")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    p.add_argument("--max-minutes", type=float, default=6.0, help="training wall-clock cap per variant, min")
    p.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of every subprocess")
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda or cuda:N")
    p.add_argument("--members", type=int, default=4, help="ensemble members in the evaluation")
    p.add_argument("--max-windows", type=int, default=8, help="wettest held-out windows scored")
    p.add_argument("--margin", type=float, default=0.05, help="relative margin an option must win by")
    p.add_argument("--max-slowdown", type=float, default=0.25, help="largest sampling-time increase allowed")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS,
                   help="Markdown file whose marked results block is rewritten")
    p.add_argument("--force", action="store_true", help="rerun variants that already have results")
    return p


def main(argv: list[str] | None = None, *, runner: Runner = run_subprocess) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.threads < 1 or args.members < 2 or args.max_windows < 1:
        raise ValueError("steps, threads and max-windows must be >= 1 and members >= 2")
    for name in ("run_dir", "init", "docs"):  # the subprocesses run in the repository root
        setattr(args, name, getattr(args, name).resolve())
    args.data, args.events = [p.resolve() for p in args.data], [p.resolve() for p in args.events]
    if not args.events:
        raise ValueError("no evaluation events: pass --events FILE ...")
    variants = select_variants(args.variants)
    for options in variants.values():
        parse_options(options)  # a bad key fails here, before an hour of training
    summaries: dict[str, dict] = {}
    for name, options in variants.items():
        log.info("variant %s (%s)", name, options or "no options")
        try:
            summaries[name] = run_variant(name, options, args, runner)
        except (RuntimeError, OSError, KeyError, ValueError) as error:  # record, go on with the rest
            log.error("variant %s failed: %s", name, error)
            summaries[name] = {"variant": name, "options": options, "error": str(error)}
    winners, decision = decide(summaries, margin=args.margin, max_slowdown=args.max_slowdown)
    block = results_block(summaries, decision, args)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "ablation.json").write_text(json.dumps(
        {"variants": summaries, "winners": winners, "decision": decision,
         "settings": {k: [str(x) for x in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v
                      for k, v in vars(args).items()}}, indent=1) + "\n")
    write_docs(args.docs, block)
    print(block.split("\n\n", 2)[2])  # noqa: T201 - the command's result: table, decision, misses
    return 1 if any("error" in s for s in summaries.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
