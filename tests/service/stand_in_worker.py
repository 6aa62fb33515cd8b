"""A test-only worker process: ``python -m tests.service.stand_in_worker``.

The real worker (``service.worker.main``: settings from ``NOWCAST_*``, signals, heartbeats,
fencing) around a :class:`~tests.service.conftest.FakeModel` with the default checkpoint's
config (so the API, which reads that checkpoint, and this worker agree on ``t_in``), instead of
the networks. Two test-only variables:

- ``NOWCAST_TEST_SAMPLE_SECONDS``: how long one forecast call takes (default 0);
- ``NOWCAST_TEST_SAMPLE_LOG``: a file to which every forecast call appends one line per job,
  ``start|end <worker> <pid> <seed>``, so a test can count how often each job was sampled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from model.checkpoint import CONFIG_FILE
from model.config import STLDMConfig
from service.worker import main
from tests.service.conftest import FakeModel
from tests.service.helpers import nowcaster_of

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"


class RecordingModel(FakeModel):
    """FakeModel that appends its forecast calls to a log file."""

    def __init__(self, config: STLDMConfig, *, delay: float, log_path: str | None) -> None:
        super().__init__(config, delay=delay)
        self.log_path = log_path
        self.worker = os.environ.get("NOWCAST_WORKER__NAME", "")

    def _record(self, what: str, seeds: list[int]) -> None:
        if self.log_path:
            lines = "".join(f"{what} {self.worker} {os.getpid()} {s}\n" for s in seeds)
            with open(self.log_path, "a") as log:  # one write in append mode: lines never interleave
                log.write(lines)

    def forecast(self, x, *, seed: list[int], **kwargs):
        self._record("start", seed)
        out = super().forecast(x, seed=seed, **kwargs)
        self._record("end", seed)
        return out


def stand_in() -> RecordingModel:
    config = STLDMConfig.from_dict(json.loads((CHECKPOINT / CONFIG_FILE).read_text()))
    return RecordingModel(config, delay=float(os.environ.get("NOWCAST_TEST_SAMPLE_SECONDS", "0")),
                          log_path=os.environ.get("NOWCAST_TEST_SAMPLE_LOG"))


if __name__ == "__main__":
    main(nowcaster=nowcaster_of(stand_in()))
