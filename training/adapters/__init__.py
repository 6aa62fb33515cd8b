"""Adapters for the datasets of the paper, each a torch ``Dataset`` with the items of
:class:`training.data.RadarWindows` (``x``, ``y``, ``valid``, ``source``, ``start``).

- :class:`SevirVIL`: SEVIR VIL HDF5 + catalog CSV, 13 -> 12 at 5 min, pixels = VIL / 255
  (needs ``h5py``).
- :class:`HKO7`: HKO-7 radar PNGs + day lists, 5 -> 20 at 6 min (needs ``Pillow``).
- :class:`MeteoNetReflectivity`: MeteoNet reflectivity npz, 5 -> 20 at 5 min.

The optional dependencies are imported only when an item is read.
"""

from training.adapters.hko7 import HKO7
from training.adapters.meteonet import MeteoNetReflectivity
from training.adapters.sevir import SevirVIL

__all__ = ["HKO7", "MeteoNetReflectivity", "SevirVIL"]
