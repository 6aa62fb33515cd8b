"""Synthetic rain sequences for tests and for running the pipeline without radar data.

A sequence is the sum of two parts, both carried by a smoothly varying wind:

- convective cells: anisotropic cells with a profile between exponential and Gaussian,
  ``R = R_peak e(t) exp(-d ** p)`` with ``d`` the elliptical distance in semi-axes and ``p``
  in [1, 2]; each cell is born, grows and decays over its lifetime
  (``e(t) = sin(pi * age / lifetime)``, its axes scale with ``0.6 + 0.4 e``) and drifts with
  the wind at its own position, so cells move at different speeds;
- a stratiform field: spatially correlated Gaussian noise with a power-law spectrum
  (power ``~ k ** -3``, made by filtering white noise with an FFT), rotated slowly between two
  independent fields so that it evolves, shifted with the domain-mean wind, thresholded and
  scaled to rain; the same noise adds a multiplicative texture to the cells.

The wind is a mean vector of 20-60 km/h in a random direction that veers slowly in time, plus
a sinusoidal shear of 20 % across the domain. Rates below 0.1 mm/h are dry (0). Everything is
drawn from one ``numpy`` generator, so a sequence is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from model.transform import PixelTransform
from training.adapters.common import make_item

DRY_BELOW = 0.1  # mm/h
MAX_RATE = 150.0  # mm/h
SPECTRAL_SLOPE = 3.0  # power spectrum ~ k ** -SPECTRAL_SLOPE


def power_law_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n) complex spectrum of unit-variance noise with power ``~ k ** -SPECTRAL_SLOPE``."""
    k = np.fft.fftfreq(n)
    radius = np.hypot(k[:, None], k[None, :])
    radius[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) * radius ** (-SPECTRAL_SLOPE / 2)
    spectrum[0, 0] = 0.0
    field = np.fft.ifft2(spectrum).real
    return spectrum / field.std()


def _wind(pos: np.ndarray, t_hours: float, base: np.ndarray, veer: float, extent: float) -> np.ndarray:
    """(N, 2) positions in km (y, x) -> (N, 2) velocity in km/h at time ``t_hours``."""
    angle = veer * t_hours
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mean = rot @ base
    speed = np.hypot(*mean)
    shear = 0.2 * speed * np.stack([np.sin(2 * np.pi * pos[:, 1] / extent),
                                    np.cos(2 * np.pi * pos[:, 0] / extent)], axis=1)
    return mean[None, :] + shear


def _cells(gy: np.ndarray, gx: np.ndarray, pos: np.ndarray, major: np.ndarray, minor: np.ndarray,
           theta: np.ndarray, shape: np.ndarray, amplitude: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Sum of N cells on the (H, W) grid of cell centres ``gy, gx`` (km), float32 for speed.

    Per cell (N,): centre ``pos`` (N, 2) km, semi-axes ``major``/``minor`` km times ``scale``,
    orientation ``theta`` rad, profile exponent ``shape``, ``amplitude`` in mm/h.
    """
    def col(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float32)[:, None, None]

    dy, dx = gy[None] - col(pos[:, 0]), gx[None] - col(pos[:, 1])
    cos, sin = col(np.cos(theta)), col(np.sin(theta))
    u = (dx * cos + dy * sin) / col(major * scale)
    v = (dy * cos - dx * sin) / col(minor * scale)
    return np.sum(col(amplitude) * np.exp(-((u * u + v * v) ** (col(shape) / 2))), axis=0)


def synthetic_rain(
    seed: int | np.random.Generator,
    *,
    n_frames: int,
    size: int,
    step_minutes: int = 5,
    cell_km: float = 4.0,
) -> np.ndarray:
    """One synthetic rain sequence (see the module docstring).

    Parameters
    ----------
    seed : int or np.random.Generator
        Seed of the draw; the same seed gives the same sequence.
    n_frames : int
    size : int
        Frame side in cells.
    step_minutes : int
        Minutes between frames.
    cell_km : float
        Cell size in km.

    Returns
    -------
    np.ndarray
        (n_frames, size, size) float32 rain rate in mm/h, 0 = dry, no NaN.
    """
    if n_frames < 1 or size < 1 or step_minutes < 1 or cell_km <= 0:
        raise ValueError("n_frames, size and step_minutes must be >= 1 and cell_km > 0")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    extent = size * cell_km  # km
    dt = step_minutes / 60.0  # h
    direction = rng.uniform(0, 2 * np.pi)
    base = rng.uniform(20.0, 60.0) * np.array([np.sin(direction), np.cos(direction)])  # (vy, vx) km/h
    veer = np.deg2rad(rng.uniform(-20.0, 20.0))  # rad/h

    # Cells over the domain extended upwind, so that rain keeps entering it.
    travel = np.hypot(*base) * dt * n_frames
    n_cells = 4 + rng.poisson(10.0 * ((extent + travel) / 256.0) ** 2)
    pos = rng.uniform(0.0, extent + travel, (n_cells, 2)) - travel * (base > 0)  # (y, x) km
    lifetime = rng.uniform(30.0, 150.0, n_cells) / 60.0  # h
    birth = rng.uniform(-lifetime, n_frames * dt)
    peak = np.clip(rng.lognormal(np.log(8.0), 0.9, n_cells), 0.5, 120.0)
    major = rng.uniform(4.0, 20.0, n_cells)  # km
    minor = major / rng.uniform(1.0, 3.0, n_cells)
    theta = rng.uniform(0.0, np.pi, n_cells)
    shape = rng.uniform(1.0, 2.0, n_cells)

    # Stratiform noise on a periodic grid twice the domain, shifted in Fourier space.
    n = 2 * size
    spec_a, spec_b = power_law_noise(rng, n), power_law_noise(rng, n)
    decorrelation = rng.uniform(2.0, 6.0)  # h for a quarter turn between the two fields
    threshold, strat_rate = rng.uniform(0.3, 1.2), rng.uniform(0.5, 3.0)
    k = np.fft.fftfreq(n)
    shift = np.zeros(2)  # cells, (y, x)

    centre = ((np.arange(size) + 0.5) * cell_km).astype(np.float32)
    gy, gx = np.meshgrid(centre, centre, indexing="ij")
    frames = np.empty((n_frames, size, size), dtype=np.float32)
    for f in range(n_frames):
        t = f * dt
        phase = np.exp(-2j * np.pi * (k[:, None] * shift[0] + k[None, :] * shift[1]))
        turn = 0.5 * np.pi * t / decorrelation
        noise = np.fft.ifft2((np.cos(turn) * spec_a + np.sin(turn) * spec_b) * phase).real[:size, :size]

        envelope = np.where((t >= birth) & (t <= birth + lifetime),
                            np.sin(np.pi * np.clip((t - birth) / lifetime, 0.0, 1.0)), 0.0)
        reach = 7.0 * major  # km beyond which a cell adds < 1e-3 of its peak
        inside = np.all((pos > -reach[:, None]) & (pos < extent + reach[:, None]), axis=1)
        alive = (envelope > 0) & inside
        cells = _cells(gy, gx, pos[alive], major[alive], minor[alive], theta[alive], shape[alive],
                       peak[alive] * envelope[alive], 0.6 + 0.4 * envelope[alive])

        rain = cells * np.exp(0.3 * noise) + strat_rate * np.maximum(noise - threshold, 0.0)
        frames[f] = np.where(rain < DRY_BELOW, 0.0, np.minimum(rain, MAX_RATE))

        pos += _wind(pos, t, base, veer, extent) * dt
        shift += _wind(np.array([[extent / 2, extent / 2]]), t, base, veer, extent)[0] * dt / cell_km
    return frames


class SyntheticRain(Dataset):
    """``length`` synthetic windows with the items of :class:`training.data.RadarWindows`.

    Item ``i`` is :func:`synthetic_rain` seeded with ``(seed, i)``, converted to pixels with
    ``transform``; ``valid`` is all True and ``source`` is ``"synthetic"``.

    Parameters
    ----------
    length : int
    t_in, t_out, size : int
    transform : PixelTransform, optional
        The model config's transform (default: HKO-7 convention).
    seed : int
    step_minutes : int
    cell_km : float
    """

    def __init__(self, length: int, *, t_in: int, t_out: int, size: int,
                 transform: PixelTransform | None = None, seed: int = 0, step_minutes: int = 5,
                 cell_km: float = 4.0) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length, self.t_in, self.t_out, self.size = length, t_in, t_out, size
        self.transform = PixelTransform() if transform is None else transform
        self.seed, self.step_minutes, self.cell_km = seed, step_minutes, cell_km

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} items")
        n_frames = self.t_in + self.t_out
        rain = synthetic_rain(np.random.default_rng([self.seed, i]), n_frames=n_frames, size=self.size,
                              step_minutes=self.step_minutes, cell_km=self.cell_km)
        minutes = i * n_frames * self.step_minutes  # consecutive items, as if cut from one long event
        start = np.datetime64("2000-01-01T00:00", "ns") + np.timedelta64(minutes, "m")
        return make_item(self.transform.to_pixel(rain, "mm/h"), np.ones(rain.shape, dtype=bool),
                         t_in=self.t_in, size=None, source="synthetic", start=start)
