"""PNG plots of ``nowcast evaluate`` results (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"stldm": "C0", "stldm_first_estimate": "C9", "persistence": "C7", "extrapolation": "C2",
           "steps": "C3"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # called at plot time, never at import
    import matplotlib.pyplot as plt

    return plt


def _values(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], dtype=float)


def plot_scores(result: dict, path: Path) -> None:
    """Scores against lead time: CSI at 1 and 5 mm/h, FSS, CRPS, BSS and MAE, one line per method."""
    plt = _pyplot()
    leads, labels = result["lead_minutes"], [t["label"] for t in result["thresholds"]]
    one, five = labels.index("1 mm/h"), labels.index("5 mm/h")
    panels = [
        ("CSI 1 mm/h", lambda s: s["csi"][0][one]),
        ("CSI 5 mm/h", lambda s: s["csi"][0][five]),
        ("CSI_16 1 mm/h", lambda s: s["csi"][2][one]),
        (f"FSS 1 mm/h, {result['fss_scales_cells'][1]} cells", lambda s: s["fss"][1][one]),
        ("CRPS (mm/h), lower is better", lambda s: s["crps"]),
        ("Brier skill 1 mm/h", lambda s: s["bss"][one]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (title, get) in zip(axes.flat, panels, strict=True):
        for method, s in result["scores"].items():
            ax.plot(leads, _values(get(s)), marker="o", ms=3, label=method, color=COLOURS.get(method))
        ax.set_title(title)
        ax.set_xlabel("lead time (min)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(result: dict, path: Path) -> None:
    """Reliability diagrams (all lead times) for the ensembles at every mm/h threshold."""
    plt = _pyplot()
    labels = [t["label"] for t in result["thresholds"]]
    chosen = [i for i, label in enumerate(labels) if label.endswith("mm/h")]
    ensembles = [m for m, s in result["scores"].items() if "rank_histogram" in s]
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.4), constrained_layout=True,
                             squeeze=False)
    for ax, j in zip(axes[0], chosen, strict=True):
        ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--")
        for method in ensembles:
            rel = result["scores"][method]["reliability"]
            ax.plot(_values(rel["forecast"][j]), _values(rel["observed"][j]), marker="o", ms=3,
                    label=method, color=COLOURS.get(method))
        ax.set_title(f"P(rain >= {labels[j]})")
        ax.set_xlabel("forecast probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel("observed frequency")
    axes[0, 0].legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_rank_histograms(result: dict, path: Path) -> None:
    """Rank histograms of the ensembles (all lead times; all-dry cells left out)."""
    plt = _pyplot()
    ensembles = [m for m, s in result["scores"].items() if "rank_histogram" in s]
    fig, axes = plt.subplots(1, len(ensembles), figsize=(4 * len(ensembles), 3.2), constrained_layout=True,
                             squeeze=False)
    for ax, method in zip(axes[0], ensembles, strict=True):
        h = _values(result["scores"][method]["rank_histogram"])
        ax.bar(np.arange(len(h)), h, color=COLOURS.get(method))
        ax.axhline(1 / len(h), color="k", lw=0.8, ls="--")
        ax.set_title(f"{method} rank histogram")
        ax.set_xlabel("rank of the truth")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_case(case: dict, result: dict, path: Path, *, threshold_mmh: float = 1.0) -> None:
    """One case: last input, truth, three members of each ensemble and P(>= threshold)."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    leads = result["lead_minutes"]
    lead = len(leads) // 2
    norm = LogNorm(0.1, 50)
    fig, axes = plt.subplots(2, 5, figsize=(16, 6.8), constrained_layout=True)
    first = [("last input", case["inputs"][-1]), (f"truth +{leads[lead]} min", case["truth"][lead])]
    for row, method in enumerate(("stldm", "steps")):
        members = np.nan_to_num(case[method][:, lead])
        fields = [first[row], *((f"{method} member {k} +{leads[lead]}", members[k])
                                for k in range(min(3, len(members))))]
        for ax, (title, field) in zip(axes[row], fields, strict=False):
            im = ax.imshow(np.where(field >= 0.1, field, np.nan), norm=norm, cmap="viridis")
            ax.set_title(title, fontsize=9)
        im_p = axes[row, 4].imshow((members >= threshold_mmh).mean(0), vmin=0, vmax=1, cmap="Blues")
        axes[row, 4].set_title(f"{method} P(>={threshold_mmh:g} mm/h) +{leads[lead]}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, :4], shrink=0.7, label="rain rate (mm/h)")
    fig.colorbar(im_p, ax=axes[:, 4], shrink=0.7, label="probability")
    window = result["windows"][case["window"]]
    fig.suptitle(f"{window['source']} {window['start']} tile y0={window['y0']} x0={window['x0']}")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_plots(result: dict, case: dict | None, out: Path) -> list[str]:
    """Write every plot under ``out``; returns the file names (relative to ``out``).

    ``case`` holds one window's fields in mm/h: ``inputs`` (T_in, H, W), ``truth`` (T, H, W),
    ``stldm`` and ``steps`` (K, T, H, W).
    """
    names = ["scores_vs_lead.png", "reliability.png", "rank_histograms.png"]
    plot_scores(result, out / names[0])
    plot_reliability(result, out / names[1])
    plot_rank_histograms(result, out / names[2])
    if case is not None:
        names.append("case.png")
        plot_case(case, result, out / names[-1])
    return names
