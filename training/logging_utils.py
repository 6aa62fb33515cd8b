"""The run log (one JSON object per line) and the hardware summary stored with checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


class JsonlLog:
    """Appends one JSON object per line to ``path``; a resumed run continues the same file.

    Every record carries ``kind`` ("train" or "val") and ``step`` so that readers can filter
    and de-duplicate lines written after the last checkpoint of an interrupted run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, step: int, **values: Any) -> None:
        record = {"kind": kind, "step": step, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a run log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def hardware_summary(device: torch.device, world_size: int) -> dict[str, Any]:
    """What the run ran on: CPU count and torch threads, GPU name, number of processes."""
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size,
        "torch": torch.__version__,
    }


def rounded(values: dict[str, float], digits: int = 6) -> dict[str, float]:
    """Round floats for a compact log without losing the significant digits of small losses."""
    return {k: float(f"{v:.{digits}g}") for k, v in values.items()}
