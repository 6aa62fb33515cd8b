"""Colour scales of the products, shared by the PNG endpoint, the map layers and the viewer's legend.

Rain rate (mean, percentiles, the last observation): classes in mm/h from ColorBrewer's YlGnBu
(sequential, colour-blind safe, lightest = lightest rain) with a purple class for >= 100 mm/h.
Probabilities: classes in % from ColorBrewer's YlOrRd. Dry cells (below the checkpoint's rain
threshold, 0.1 mm/h) and 0 % are transparent, so a base map shows through; no data is a
translucent grey, never "dry".
"""

from __future__ import annotations

from typing import Any

import numpy as np

PRODUCTS = ("mean", "p10", "p50", "p90", "probability", "observed")
PERCENTILE_PRODUCTS = {"p10": 10, "p50": 50, "p90": 90}
RAIN_LEVELS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # mm/h, lower class edges
RAIN_COLOURS = ("#edf8b1", "#c7e9b4", "#7fcdbb", "#41b6c4", "#1d91c0", "#225ea8", "#253494", "#081d58",
                "#7a0177")
PROBABILITY_LEVELS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)  # lower class edges; 0 itself is transparent
PROBABILITY_COLOURS = ("#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#e31a1c", "#800026")
NODATA_RGBA = (150, 150, 150, 110)
NODATA_COLOUR = "#969696"


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def scale_of(product: str) -> str:
    """``"probability"`` or ``"rain"``; ``ValueError`` naming the products for any other."""
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; valid products: {list(PRODUCTS)}")
    return "probability" if product == "probability" else "rain"


def classes(values: np.ndarray, scale: str) -> np.ndarray:
    """(...) values -> (...) int class index: -1 transparent (dry, 0 %), -2 no data."""
    levels = np.asarray(PROBABILITY_LEVELS if scale == "probability" else RAIN_LEVELS, np.float64)
    values = np.asarray(values, np.float64)
    index = np.searchsorted(levels, values, side="right") - 1
    if scale == "probability":
        index[values <= 0] = -1
    else:
        index[values < levels[0]] = -1
    index[~np.isfinite(values)] = -2
    return index.astype(np.int16)


def rgba(values: np.ndarray, scale: str) -> np.ndarray:
    """(H, W) values (mm/h, or probability in [0, 1]) -> (H, W, 4) uint8 RGBA of the scale."""
    colours: tuple[str, ...] = PROBABILITY_COLOURS if scale == "probability" else RAIN_COLOURS
    table = np.zeros((len(colours) + 2, 4), np.uint8)  # rows: classes..., transparent, no data
    table[: len(colours), :3] = [_rgb(c) for c in colours]
    table[: len(colours), 3] = 235
    table[-1] = NODATA_RGBA
    rgba_values: np.ndarray = table[classes(values, scale)]
    return rgba_values


def legend(scale: str, *, threshold: float | None = None) -> dict[str, Any]:
    """The legend of a scale for the viewer and the PNG: title and (label, colour) entries."""
    colours: tuple[str, ...]
    if scale == "probability":
        edges = [round(100 * x) for x in PROBABILITY_LEVELS] + [100]
        labels = [f"{a}-{b} %" if a else f"> 0-{b} %" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        title = "P(rain rate >= %s mm/h)" % (f"{threshold:g}" if threshold is not None else "threshold")
        colours = PROBABILITY_COLOURS
    else:
        levels = list(RAIN_LEVELS)
        labels = [f"{a:g}-{b:g}" for a, b in zip(levels[:-1], levels[1:], strict=True)]
        labels.append(f">= {levels[-1]:g}")
        title, colours = "rain rate (mm/h)", RAIN_COLOURS
    return {"title": title, "entries": [{"label": lab, "colour": c} for lab, c in zip(labels, colours,
                                                                                      strict=True)],
            "transparent": "0 %" if scale == "probability" else f"dry (< {RAIN_LEVELS[0]:g} mm/h)",
            "nodata": NODATA_COLOUR}


def field(result: dict[str, Any], product: str, *, lead_index: int, threshold: float = 1.0) -> np.ndarray:
    """(H, W) field of a decoded result: rain rate in mm/h, or a probability in [0, 1].

    ``ValueError`` naming the valid thresholds when ``threshold`` is not one of the result's,
    or when the result has no observation stored.
    """
    scale_of(product)
    if product == "mean":
        return np.asarray(result["mean"][lead_index])
    if product in PERCENTILE_PRODUCTS:
        return np.asarray(result["percentiles"][list(PERCENTILE_PRODUCTS).index(product), lead_index])
    if product == "observed":
        if "observed" not in result:
            raise ValueError("this result holds no observation (made before the service stored it)")
        return np.asarray(result["observed"])
    thresholds = [float(x) for x in np.asarray(result["thresholds"])]
    match = [k for k, t in enumerate(thresholds) if np.isclose(t, threshold)]
    if not match:
        raise ValueError(f"threshold={threshold} is not in this nowcast; valid thresholds (mm/h): "
                         f"{thresholds}")
    return np.asarray(result["probability"][match[0], lead_index])
