"""The VAE's ceiling: how much of the observed rain survives encoding and decoding alone.

No forecast can be sharper than its VAE's reconstruction of the truth. ``python -m
verification.reconstruction --checkpoint DIR`` encodes and decodes every frame of the
checkpoint's validation windows (its own split rule, :mod:`radar.split`; ``--split test`` for
the held-out ones) and scores the decoded frames against the frames themselves, unmatched, in
mm/h: CSI at 1 and 5 mm/h and FSS at 1 mm/h over 1 and 5 cells, for all windows and for the
windows of *isolated showers* (rain on under ``--shower-fraction`` of the cells with data,
where small cells dominate), with the fraction of cells at or above 1 mm/h before and after.
It prints a table and writes ``reconstruction.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_checkpoint, read_manifest
from radar.split import SplitRule, WindowShape, windows_of
from verification.metrics import ContingencyAccumulator, FSSAccumulator, Threshold

log = logging.getLogger(__name__)

THRESHOLDS = (Threshold("1 mm/h", 1.0), Threshold("5 mm/h", 5.0))


def reconstruct(vae, pixels: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    """(N, H, W) pixels -> (N, H, W) pixels decoded from the encoder means."""
    out = []
    with torch.inference_mode():
        for part in torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).split(chunk):
            mean, _ = vae.encode(part[:, None])
            out.append(vae.decode(mean)[:, 0].clamp(0, 1))
    return torch.cat(out).numpy()


class Scores:
    """CSI, FSS and wet fractions of one group of windows."""

    def __init__(self) -> None:
        self.contingency = ContingencyAccumulator(THRESHOLDS, 1, pools=(1,))
        self.fss = FSSAccumulator(THRESHOLDS[:1], 1, scales=(1, 5))
        self.wet = np.zeros(2)  # observed, reconstructed cells >= 1 mm/h
        self.cells = 0
        self.windows = 0

    def add(self, truth: np.ndarray, decoded: np.ndarray, valid: np.ndarray) -> None:
        """(N, H, W) mm/h truth and reconstruction, (N, H, W) bool."""
        for t, d, v in zip(truth, decoded, valid, strict=True):
            self.contingency.add(d[None], t[None], v[None])
            self.fss.add(d[None], t[None], v[None])
        self.wet += [np.sum((truth >= 1.0) & valid), np.sum((decoded >= 1.0) & valid)]
        self.cells += int(valid.sum())
        self.windows += 1

    def to_dict(self) -> dict:
        csi = self.contingency.scores(over_leads=True)["csi"][0]
        fss = self.fss.scores(over_leads=True)[:, 0]
        return {"windows": self.windows, "csi_1mmh": float(csi[0]), "csi_5mmh": float(csi[1]),
                "fss_1mmh_1cell": float(fss[0]), "fss_1mmh_5cells": float(fss[1]),
                "wet_fraction_observed": float(self.wet[0] / max(self.cells, 1)),
                "wet_fraction_reconstructed": float(self.wet[1] / max(self.cells, 1))}


def score_reconstruction(checkpoint: Path, *, split: str = "val", size: int = 128,
                         shower_fraction: float = 0.05, max_windows: int | None = None) -> dict:
    """Reconstruction scores of ``checkpoint``'s VAE per network and for isolated showers."""
    model = load_checkpoint(checkpoint)
    manifest = read_manifest(checkpoint)
    training = manifest.get("training") or {}
    cfg, data = training.get("config") or {}, training.get("data") or {}
    if "split" not in data:
        raise ValueError(f"{checkpoint} records no split rule (trained before radar.split); "
                         "its validation windows cannot be rebuilt")
    transform = model.config.transform
    shape = WindowShape(t_in=model.config.t_in, t_out=model.config.t_out, size=size, stride=size,
                        min_leads=cfg.get("min_leads", 6), min_coverage=cfg.get("min_coverage", 0.5),
                        min_rain_fraction=cfg.get("min_rain_fraction", 0.0))
    windows = windows_of(data["files"], which=split, shape=shape, rule=SplitRule(**data["split"]),
                         steps=data.get("steps") or (5,), cell_km=cfg.get("cell_km", 4.0),
                         transform=transform)
    windows = windows[:: max(1, len(windows) // max_windows)] if max_windows else windows
    groups: dict[str, Scores] = {}
    for window in windows:
        decoded = transform.from_pixel(reconstruct(model.vae, window.pixels), "mm/h")
        truth = transform.from_pixel(window.pixels, "mm/h")
        rainy = np.sum((truth >= 1.0) & window.valid) / max(window.valid.sum(), 1)
        keys = ["all", window.network] + (["isolated showers"] if 0 < rainy < shower_fraction else [])
        for key in keys:
            groups.setdefault(key, Scores()).add(truth, decoded, window.valid)
    return {"checkpoint": str(checkpoint), "model_version": manifest.get("model_version"), "split": split,
            "size": size, "shower_fraction": shower_fraction,
            "groups": {k: v.to_dict() for k, v in sorted(groups.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verification.reconstruction", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--size", type=int, default=128, help="window side in cells")
    parser.add_argument("--shower-fraction", type=float, default=0.05,
                        help="windows with rain >= 1 mm/h on fewer of their cells are isolated showers")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="score about this many windows, evenly spaced over the split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="folder of reconstruction.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    result = score_reconstruction(args.checkpoint, split=args.split, size=args.size,
                                  shower_fraction=args.shower_fraction, max_windows=args.max_windows)
    log.info("%s, %s windows:", result["model_version"], args.split)
    header = f"{'group':18s} {'windows':>7s} {'CSI 1':>6s} {'CSI 5':>6s} {'FSS 1/1':>7s} {'FSS 1/5':>7s} " \
             f"{'wet obs':>8s} {'wet rec':>8s}"
    lines = [header] + [
        f"{name:18s} {g['windows']:7d} {g['csi_1mmh']:6.3f} {g['csi_5mmh']:6.3f} "
        f"{g['fss_1mmh_1cell']:7.3f} {g['fss_1mmh_5cells']:7.3f} "
        f"{g['wet_fraction_observed']:8.2%} {g['wet_fraction_reconstructed']:8.2%}"
        for name, g in result["groups"].items()]
    for line in lines:
        log.info("%s", line)
    out = Path(args.out or args.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reconstruction.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
