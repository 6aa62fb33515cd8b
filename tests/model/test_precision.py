"""The denoiser in bfloat16 (model/precision.py) and what the sampler does with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from model import precision as precision_module
from model.nowcast import Nowcaster
from model.precision import bfloat16_supported, dtype_of, resolve_precision, set_precision
from service.settings import ModelSettings

ROOT = Path(__file__).resolve().parents[2]
needs_bf16 = pytest.mark.skipif(not bfloat16_supported(torch.device("cpu")),
                                reason="this CPU has no native bfloat16 kernels (AVX512-BF16 or AMX)")


def test_unknown_precision_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'bfloat16'\), got 'fp16'"):
        dtype_of("fp16")
    with pytest.raises(ValidationError, match="precision"):
        ModelSettings(precision="fp16")


def test_auto_is_bfloat16_only_where_the_device_runs_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    assert ModelSettings().precision == "auto"  # the worker's default
    assert resolve_precision("auto", cpu) == ("bfloat16" if bfloat16_supported(cpu) else "float32")
    monkeypatch.setattr(precision_module, "bfloat16_supported", lambda device: False)
    assert resolve_precision("auto", cpu) == "float32"  # a CPU without the kernels keeps float32
    assert resolve_precision("float32", cpu) == "float32"
    with pytest.raises(ValueError, match=r"one of \('auto', 'float32', 'bfloat16'\), got 'fp16'"):
        resolve_precision("fp16", cpu)


def test_auto_leaves_the_denoiser_in_float32_without_native_kernels(tiny_model, monkeypatch):
    monkeypatch.setattr(precision_module, "bfloat16_supported", lambda device: False)
    set_precision(tiny_model, "auto")
    assert {p.dtype for p in tiny_model.denoiser.parameters()} == {torch.float32}


@needs_bf16
def test_bfloat16_puts_only_the_denoiser_in_bfloat16(tiny_model):
    set_precision(tiny_model, "bfloat16")
    assert {p.dtype for p in tiny_model.denoiser.parameters()} == {torch.bfloat16}
    others = [*tiny_model.vae.parameters(), *tiny_model.translator.parameters()]
    assert {p.dtype for p in others} == {torch.float32}


@needs_bf16
@pytest.mark.parametrize("guidance", [1.0, 0.0])
def test_a_bfloat16_denoiser_samples_what_float32_samples(tiny_model, guidance):
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(1, tiny_model.config.t_in, 64, 64, generator=gen)
    ref = tiny_model.forecast(x, members=2, steps=3, seed=0, guidance=guidance)
    set_precision(tiny_model, "bfloat16")
    out = tiny_model.forecast(x, members=2, steps=3, seed=0, guidance=guidance)
    assert out.members.dtype == torch.float32 and torch.isfinite(out.members).all()
    assert torch.equal(out.first_estimate, ref.first_estimate)  # VAE and translator stay float32
    difference = (out.members - ref.members).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.1
    assert not torch.equal(out.members, ref.members)  # the denoiser did run in bfloat16


@needs_bf16
def test_the_shipped_model_in_bfloat16_forecasts_real_radar_like_float32():
    """The worker's setting NOWCAST_MODEL__PRECISION=bfloat16 on the default checkpoint: the
    same seed gives nearly the same members in mm/h."""
    from radar.read import cut_window, read_event

    event = ROOT.parent / "shared" / "radar" / "events" / "fmi_20160928.nc"
    if not event.is_file():
        pytest.skip(f"{event} not found")
    checkpoint = ROOT / "checkpoints" / "default"
    frames = np.nan_to_num(cut_window(read_event(event), start=0, n_frames=5, size=128, coarsen=4).values)
    results = []
    for precision in ("float32", "bfloat16"):
        nowcaster = Nowcaster.from_checkpoint(checkpoint, precision=precision)
        result = nowcaster.nowcast(frames, step_minutes=5, members=2, steps=2)
        results.append(result.members)
    ref, out = results
    assert out.shape == ref.shape and np.isfinite(out).all()
    wet = ref >= 1.0
    assert wet.mean() > 0.01  # the window rains
    agree = (out >= 1.0) == wet
    assert agree.mean() > 0.97  # the 1 mm/h areas nearly coincide
