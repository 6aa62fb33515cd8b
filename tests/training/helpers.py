"""Helpers of the training tests (imported by the tests, not fixtures)."""

from __future__ import annotations


def build_windows(paths, *, t_in: int, t_out: int, step_minutes: int = 5, size: int, cell_km: float,
                  transform, val_fraction: float = 0.0, seed: int = 0, min_leads: int | None = None,
                  test_minutes: int = 0, min_rain_fraction: float = 0.0, **options):
    """(train, val) windows of ``paths`` at one step, full windows only by default, no held-out
    test time and no held-out regions unless asked: the small events of these tests."""
    from radar.split import SplitRule
    from training.data import build_splits

    rule = SplitRule(val_fraction=val_fraction, seed=seed, test_minutes=test_minutes, test_region="",
                     val_region="", block_minutes=options.pop("block_minutes", 100))
    splits = build_splits(paths, t_in=t_in, t_out=t_out, steps=(step_minutes,), size=size, cell_km=cell_km,
                          transform=transform, rule=rule, min_leads=min_leads or t_out,
                          min_rain_fraction=min_rain_fraction, **options)
    return splits["train"], splits["val"]
