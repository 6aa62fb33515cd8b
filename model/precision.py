"""The denoiser's number format: float32 (the reference) or bfloat16 (issue 14).

The denoiser runs at every DDIM step, twice with guidance, and is most of a forecast's work;
the VAE, the translator, the DDIM updates and guidance stay in float32. In bfloat16 its
weights and activations take half the memory traffic, and oneDNN runs its convolutions and
matrix products on the CPU's bfloat16 units (AVX512-BF16, AMX) or the GPU's tensor cores.
Measured on the project machine (Xeon with AMX, one denoiser call of the ``paper`` preset for
20 sequences at two threads: 7.7 s in float32, 3.6 s in bfloat16; the ``small`` preset's 10
guided DDIM steps for 10 members at one thread: 3.9 s against 2.9 s). The cost is precision:
v-predictions differ from float32 by 0.7 % of their spread on average; the skill it gives is
measured, not assumed (README, Speed).

Norm statistics accumulate in float32 (group norms compute them from a float32 copy, channel
norms in PyTorch's bfloat16 layer_norm, which accumulates in float32), and softmax and the DDIM
step compute in float32, whatever the format (:mod:`model.blocks`).
"""

from __future__ import annotations

from typing import TypeVar

import torch

from model.options import PRECISION_SETTINGS, PRECISIONS

Model = TypeVar("Model", bound=torch.nn.Module)


def dtype_of(precision: str) -> torch.dtype:
    """``"float32"`` or ``"bfloat16"`` -> the torch dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return getattr(torch, precision)


def bfloat16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (a CUDA GPU that supports it, or
    a CPU whose oneDNN has bfloat16 kernels: AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: ``"bfloat16"`` where ``device`` runs it natively (:func:`bfloat16_supported`),
    else ``"float32"``; ``"float32"`` and ``"bfloat16"`` as they are."""
    if precision not in PRECISION_SETTINGS:
        raise ValueError(f"precision must be one of {PRECISION_SETTINGS}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if bfloat16_supported(device) else "float32"
    return precision


def set_precision(model: Model, precision: str) -> Model:
    """Put ``model.denoiser`` (an STLDM's) in ``precision`` (``"auto"``: :func:`resolve_precision`
    on the denoiser's device); returns ``model``.

    The sampler (:func:`model.sampler.sample_latents`) feeds the denoiser in the dtype of its
    weights and brings its output back to float32. Raises ``ValueError`` for bfloat16 on a
    device without native bfloat16 kernels (measured only where they exist).
    """
    denoiser = getattr(model, "denoiser", None)
    if not isinstance(denoiser, torch.nn.Module):
        raise TypeError("model has no denoiser network")
    device = next(denoiser.parameters()).device
    dtype = dtype_of(resolve_precision(precision, device))
    if dtype == torch.bfloat16 and not bfloat16_supported(device):
        raise ValueError(f"precision 'bfloat16' needs native bfloat16 kernels, which {device} lacks "
                         "(CPU: AVX512-BF16 or AMX; GPU: compute capability 8.0+); use 'float32'")
    denoiser.to(dtype)
    return model
