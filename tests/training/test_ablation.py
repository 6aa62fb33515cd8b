"""``python -m training.ablation``: variants, decision, docs block and resuming (no real training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.ablation import (
    BEGIN,
    END,
    VARIANTS,
    build_parser,
    decide,
    main,
    results_table,
    select_variants,
    shortfalls,
    train_argv,
    write_docs,
)

LEADS = [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]  # the MRMS windows at 5 min: 30 and 50 min reported


def test_select_variants_defaults_to_all_and_keeps_the_canonical_order():
    assert list(select_variants("all")) == list(VARIANTS) == [
        "baseline", "temporal_shift", "sts_posbias", "stc_translator", "dual_condition", "intensity"]
    assert select_variants("intensity, baseline") == {
        "baseline": "", "intensity": "intensity_loss=true,exceedance_condition=true"}
    with pytest.raises(ValueError, match="temporal_shift"):
        select_variants("baseline,nope")


def test_every_variant_is_valid_nowcast_train_options_and_only_the_baseline_is_stldm():
    from training.config import parse_options

    stldm = parse_options("")
    assert {name for name, options in VARIANTS.items() if parse_options(options) == stldm} == {"baseline"}
    assert parse_options(VARIANTS["sts_posbias"]).attention_order == "sts"


def test_train_argv_passes_options_only_for_option_variants(tmp_path):
    args = build_parser().parse_args(["--steps", "7", "--threads", "1"])
    base = train_argv(args, "", tmp_path / "baseline")
    assert "--options" not in base and base[0] == "train"
    assert base[base.index("--steps") + 1] == "7" and base[base.index("--eval-every") + 1] == "7"
    shifted = train_argv(args, "temporal_shift=true", tmp_path / "temporal_shift")
    assert shifted[-2:] == ["--options", "temporal_shift=true"]
    assert shifted[:-2] == [a.replace("baseline", "temporal_shift") for a in base]


def summary(name: str, *, csi: float, crps: float, seconds: float = 10.0, options: str = "x=1") -> dict:
    """A made-up variant summary at 30 and 50 min."""
    leads = {"30": None, "50": None}
    return {"variant": name, "options": "" if name == "baseline" else options, "lead_minutes": [30, 50],
            "sampling_seconds": seconds, "parameters": 1_407_881, "steps_done": 60,
            "train_wall_minutes": 6.0,
            "stldm": {"csi_1": dict.fromkeys(leads, csi), "csi_5": dict.fromkeys(leads, csi / 4),
                      "crps": dict.fromkeys(leads, crps), "bss_1": dict.fromkeys(leads, -0.1)},
            "persistence": {"csi_1": dict.fromkeys(leads, 0.2), "csi_5": dict.fromkeys(leads, 0.05),
                            "crps": dict.fromkeys(leads, 0.5), "bss_1": dict.fromkeys(leads, -0.5)}}


def test_decide_needs_both_scores_at_both_leads_by_the_margin_and_no_big_slowdown():
    base = summary("baseline", csi=0.10, crps=0.40)
    clear = summary("clear", csi=0.12, crps=0.36)
    slow = summary("slow", csi=0.12, crps=0.36, seconds=12.6)
    small = summary("small", csi=0.104, crps=0.36)  # CSI only 4 % better
    one_lead = summary("one_lead", csi=0.12, crps=0.36)
    one_lead["stldm"]["crps"]["50"] = 0.41
    summaries = {"baseline": base, "clear": clear, "slow": slow, "small": small, "one_lead": one_lead}
    winners, line = decide(summaries, margin=0.05, max_slowdown=0.25)
    assert winners == ["clear"] and line.startswith("Decision: clear wins clearly")
    assert shortfalls(summaries, margin=0.05, max_slowdown=0.25) == {
        "clear": [], "slow": ["sampling time +26%"], "small": ["csi_1 @30 min", "csi_1 @50 min"],
        "one_lead": ["crps @50 min"]}
    winners, line = decide({"baseline": base, "small": small, "failed": {"error": "boom"}},
                           margin=0.05, max_slowdown=0.25)
    assert winners == [] and "the default stays STLDM" in line and "30 and 50 min" in line


def test_results_table_has_a_row_per_variant_persistence_and_failures():
    table = results_table({"baseline": summary("baseline", csi=0.1, crps=0.4),
                           "temporal_shift": summary("temporal_shift", csi=0.2, crps=0.3),
                           "intensity": {"variant": "intensity", "options": "o", "error": "no --options"}})
    lines = table.splitlines()
    assert lines[0].startswith("| variant | options | CSI 1 mm/h @30 | CSI 1 mm/h @50 |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| baseline", "| temporal_shift", "| persistence", "| intensity"]
    assert "| 0.200 | 0.200 |" in lines[3] and "failed: no --options" in lines[5]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_write_docs_keeps_the_intro_and_replaces_only_the_marked_block(tmp_path):
    docs = tmp_path / "ABLATION.md"
    docs.write_text(f"# Ablation\n\nHand-written intro.\n\n{BEGIN}\nold table\n{END}\n\n## Notes\nkept\n")
    write_docs(docs, "new table")
    write_docs(docs, "newer table")
    text = docs.read_text()
    assert text == f"# Ablation\n\nHand-written intro.\n\n{BEGIN}\nnewer table\n{END}\n\n## Notes\nkept\n"
    fresh = tmp_path / "sub" / "NEW.md"
    write_docs(fresh, "table")
    assert fresh.read_text().startswith("# Ablation") and f"{BEGIN}\ntable\n{END}" in fresh.read_text()


def fake_scores(csi: float) -> dict:
    """What ``nowcast evaluate --methods stldm,persistence`` writes, cut to what is read."""
    n = len(LEADS)
    method = {"csi": [[[csi] * n, [csi / 5] * n]], "crps": [0.3] * n, "bss": [[0.1] * n, [0.0] * n]}
    return {"thresholds": [{"label": "1 mm/h", "mmh": 1.0}, {"label": "5 mm/h", "mmh": 5.0}],
            "lead_minutes": LEADS, "windows": [{}, {}], "members": 2,
            "timing": {"stldm_seconds_per_ensemble": 3.0},
            "scores": {"stldm": method, "persistence": method}}


class FakeRunner:
    """Stands in for the ``nowcast`` subprocesses: writes what they would write."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: list[str], log_path: Path, threads: int) -> None:
        self.calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        if self.fail and self.fail in str(out):
            raise RuntimeError(f"nowcast {argv[0]} exited with 2")
        if argv[0] == "train":
            (out / "last").mkdir(parents=True)
            training = {"step": 5, "wall_seconds": 90.0, "hardware": {"cpu_count": 2}}
            manifest = {"parameters": 1000, "training": training}
            (out / "last" / "manifest.json").write_text(json.dumps(manifest))
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "scores.json").write_text(json.dumps(fake_scores(0.1)))


def test_main_runs_then_skips_done_variants_and_resumes_an_unevaluated_one(tmp_path, capsys):
    run_dir, docs = tmp_path / "run", tmp_path / "ABLATION.md"
    argv = ["--variants", "baseline,temporal_shift", "--run-dir", str(run_dir), "--docs", str(docs),
            "--events", str(tmp_path / "mrms_a.nc"), "--steps", "5"]
    runner = FakeRunner()
    assert main(argv, runner=runner) == 0
    assert [(c[0], c[-1]) for c in runner.calls] == [
        ("train", str(run_dir / "baseline")), ("evaluate", str(run_dir / "baseline" / "evaluate")),
        ("train", "temporal_shift=true"), ("evaluate", str(run_dir / "temporal_shift" / "evaluate"))]
    result = json.loads((run_dir / "ablation.json").read_text())
    assert result["variants"]["baseline"]["stldm"]["csi_1"] == {"30": 0.1, "50": 0.1}
    assert result["variants"]["baseline"]["train_wall_minutes"] == 1.5
    printed = capsys.readouterr().out
    assert printed.startswith("| variant |") and "| persistence |" in printed
    assert "Decision: no option wins clearly" in printed
    assert "- temporal_shift: misses csi_1 @30 min" in printed
    assert "default stays STLDM" in result["decision"] and BEGIN in docs.read_text()

    again = FakeRunner()
    assert main(argv, runner=again) == 0 and again.calls == []
    (run_dir / "temporal_shift" / "variant.json").unlink()  # trained, evaluation lost
    again = FakeRunner()
    assert main(argv, runner=again) == 0 and [c[0] for c in again.calls] == ["evaluate"]
    forced = FakeRunner()
    assert main([*argv, "--force"], runner=forced) == 0 and len(forced.calls) == 4


def test_a_failed_variant_is_recorded_and_the_rest_still_run(tmp_path):
    run_dir = tmp_path / "run"
    runner = FakeRunner(fail="intensity")
    code = main(["--variants", "baseline,intensity", "--run-dir", str(run_dir), "--docs",
                 str(tmp_path / "A.md"), "--events", str(tmp_path / "e.nc")], runner=runner)
    assert code == 1
    result = json.loads((run_dir / "ablation.json").read_text())
    assert "exited with 2" in result["variants"]["intensity"]["error"]
    assert "stldm" in result["variants"]["baseline"]
