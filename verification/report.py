"""The Markdown report of ``nowcast evaluate`` (from the content of its ``scores.json``)."""

from __future__ import annotations

REPORT_THRESHOLDS_MMH = (1.0, 5.0)  # the report's CSI columns; always among the scored thresholds



def report_leads(leads: list[int]) -> list[int]:
    """Indices of the 30 and 60 min leads; the longest lead stands in for a missing 60 min."""
    picks = []
    for minutes in (30, 60):
        i = min(range(len(leads)), key=lambda j: abs(leads[j] - minutes))
        if i not in picks:
            picks.append(i)
    return picks


def timed_note(n: int) -> str:
    """Which windows the timing medians cover (the first is a warm-up when there are >= 3)."""
    return f"{n - 1} windows (the first, a warm-up, left out)" if n >= 3 else f"{n} window(s)"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def markdown_report(result: dict, plots: list[str]) -> str:
    """The Markdown summary of ``result`` (the content of ``scores.json``)."""
    leads, scores = result["lead_minutes"], result["scores"]
    labels = [t["label"] for t in result["thresholds"]]
    thr = {mmh: labels.index(f"{mmh:g} mm/h") for mmh in REPORT_THRESHOLDS_MMH}
    picks = report_leads(leads)
    head = ["method"]
    for name in ("CSI 1 mm/h", "CSI 5 mm/h", "CRPS mm/h", "BSS 1 mm/h"):
        head += [f"{name} @{leads[i]} min" for i in picks]
    rows = []
    for method, s in scores.items():
        cells = [method]
        for key, j in (("csi", thr[1.0]), ("csi", thr[5.0]), ("crps", None), ("bss", thr[1.0])):
            for i in picks:
                v = s[key][0][j][i] if key == "csi" else s[key][i] if j is None else s[key][j][i]
                cells.append(_fmt(v))
        rows.append(cells)
    avg_head = ["method", "CSI-m", "CSI_4-m", "CSI_16-m", "HSS-m", "CSI 1 mm/h", "FSS 1 mm/h 5 cells",
                "MAE mm/h", "MAE of the mean mm/h", "SSIM", "CRPS mm/h", "BSS 1 mm/h", "ROC AUC 1 mm/h",
                "spread/skill"]
    avg_rows = []
    for method, s in scores.items():
        def mean(values):
            finite = [v for v in values if v is not None]
            return sum(finite) / len(finite) if finite else None

        avg_rows.append([method, *(_fmt(mean(s["csi_all_leads"][p])) for p in range(3)),
                         _fmt(mean(s["hss_all_leads"][0])), _fmt(s["csi_all_leads"][0][thr[1.0]]),
                         _fmt(s["fss_all_leads"][1][thr[1.0]]), _fmt(s["mae_all_leads"]),
                         _fmt(s.get("ensemble_mean_mae_all_leads", s["mae_all_leads"])),
                         _fmt(s["ssim_all_leads"]), _fmt(s["crps_all_leads"]),
                         _fmt(s["bss_all_leads"][thr[1.0]]), _fmt(s["roc_auc_all_leads"][thr[1.0]]),
                         _fmt(s.get("spread_skill_ratio_all_leads"))])
    t = result["timing"]

    def table(header, body):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])

    thr_text = ", ".join(t["label"] if t["label"].endswith("mm/h") else f"{t['label']} ({t['mmh']:.2f} mm/h)"
                         for t in result["thresholds"])
    windows = result["windows"]
    sources = sorted({w["source"] for w in windows})
    note = "" if 60 in [leads[i] for i in picks] else (
        f" The events are too short for a 60-min lead: {leads[picks[-1]]} min is the longest.")
    return f"""# Verification of {result['model_version']} against pysteps

{len(windows)} windows of {len(leads)} lead times ({leads[0]}-{leads[-1]} min at \
{result['step_minutes']} min, {result['cell_km']:g} km cells) from {', '.join(sources)}; \
{result['members']} members for the STLDM and STEPS ensembles. Native frames resampled by \
{result['resampling']}. Scores in mm/h over the cells with data in the truth; CSI counts every \
member against the truth (the paper's protocol), contingency counts summed over windows first.{note}

## Scores at {', '.join(f'{leads[i]}' for i in picks)} min

BSS: Brier skill score against the sample climatology of the truth (same cells and lead).

{table(head, rows)}

## Averages over all lead times

CSI-m / HSS-m: mean over the {len(labels)} thresholds ({thr_text}) of the scores of the \
counts summed over all lead times; CSI_4 / CSI_16: max-pooled with kernel 4 / 16, stride \
kernel / 4. SSIM on model pixels (data range 1). MAE counts every member, as CSI does; MAE of the \
mean scores the ensemble mean. LPIPS: {result['lpips']}. FVD: {result['fvd']}.

{table(avg_head, avg_rows)}

## Speed (same inputs, {t['members']} members, {t['lead_times']} lead times, this machine)

| method | median s per ensemble |
|---|---|
| STLDM | {t['stldm_seconds_per_ensemble']:.2f} |
| pysteps STEPS | {t['steps_seconds_per_ensemble']:.2f} |
| ratio STLDM / STEPS | {t['ratio_stldm_over_steps']:.2f} |

Median over {timed_note(t['windows_timed'])}, {t['torch_threads']} torch thread(s), STEPS with one \
worker (pysteps `num_workers=1`).

## Plots

{chr(10).join(f'- ![{p}]({p})' for p in plots) or '- none'}
"""

