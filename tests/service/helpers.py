"""Helpers of the service tests (imported by the tests, not fixtures)."""

from __future__ import annotations

from model.nowcast import Nowcaster
from model.options import NowcastDefaults


def nowcaster_of(model) -> Nowcaster:
    """The pipeline around a stand-in model: 5-minute steps, 4 km cells, the bulk frame by default."""
    defaults = NowcastDefaults(step_minutes=(5,), cell_km=4.0, advection="bulk")
    return Nowcaster(model, defaults, model_version=str(getattr(model, "model_version", "unknown")))
