"""Dataset adapters on tiny files written in each dataset's layout (smaller grids, same structure)."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from training.adapters import HKO7, MeteoNetReflectivity, SevirVIL

CATALOG_HEADER = ["id", "file_name", "file_index", "img_type", "time_utc", "minute_offsets", "episode_id",
                  "event_id", "event_type", "llcrnrlat", "llcrnrlon", "urcrnrlat", "urcrnrlon", "proj",
                  "size_x", "size_y", "height_m", "width_m", "data_min", "data_max", "pct_missing"]
OFFSETS = ":".join(str(m) for m in range(-120, 125, 5))  # 49 frames at 5 min


def check_item(item: dict, t_in: int, t_out: int, side: int) -> None:
    assert item["x"].shape == (t_in, side, side) and item["y"].shape == (t_out, side, side)
    assert item["valid"].shape == (t_in + t_out, side, side) and item["valid"].dtype == torch.bool
    assert item["x"].dtype == torch.float32
    frames = torch.cat([item["x"], item["y"]])
    assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0
    assert torch.all(frames[~item["valid"]] == 0.0)


@pytest.fixture
def sevir(tmp_path):
    h5py = pytest.importorskip("h5py")
    vil = np.zeros((2, 24, 24, 49), dtype=np.uint8)
    vil[:] = (5 * np.arange(49) + np.arange(2)[:, None])[:, None, None, :]
    (tmp_path / "vil" / "2019").mkdir(parents=True)
    with h5py.File(tmp_path / "vil" / "2019" / "SEVIR_VIL_STORMEVENTS_2019_0601_0630.h5", "w") as f:
        f.create_dataset("id", data=np.array([b"S001", b"S002"]))
        f.create_dataset("vil", data=vil, compression="gzip")
    catalog = tmp_path / "CATALOG.csv"
    with open(catalog, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CATALOG_HEADER)
        for index, event in enumerate(["S001", "S002"]):
            writer.writerow([event, "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0601_0630.h5", index, "vil",
                             f"2019-06-0{index + 1} 18:30:00", OFFSETS] + ["0"] * 15)
        writer.writerow(["S001", "ir069/2019/x.h5", 0, "ir069", "2019-06-01 18:30:00", OFFSETS] + ["0"] * 15)
    return catalog, tmp_path


def test_sevir_gives_three_13_to_12_windows_per_event(sevir) -> None:
    catalog, root = sevir
    data = SevirVIL(catalog, root)
    assert len(data) == 2 * 3
    item = data[5]  # event S002, third window: frames 24..48
    check_item(item, 13, 12, 24)
    frames = torch.cat([item["x"], item["y"]])[:, 0, 0]
    assert frames.tolist() == pytest.approx([(5 * t + 1) / 255 for t in range(24, 49)])
    assert item["valid"].all() and item["source"] == "sevir:S002"
    assert item["start"] == "2019-06-02T18:30:00Z"  # offset of frame 24 is 0 min


def test_sevir_resizes_and_filters_events(sevir) -> None:
    catalog, root = sevir
    data = SevirVIL(catalog, root, size=8, event_ids=["S001"])
    assert len(data) == 3
    check_item(data[0], 13, 12, 8)
    assert data[0]["x"][0, 3, 3].item() == pytest.approx(0.0)
    assert data[0]["x"][1, 3, 3].item() == pytest.approx(5 / 255)


def test_sevir_refuses_a_catalog_that_points_at_another_event(sevir) -> None:
    catalog, root = sevir
    text = catalog.read_text().replace("S002,vil", "S003,vil")
    catalog.write_text(text)
    data = SevirVIL(catalog, root, event_ids=["S003"])
    with pytest.raises(ValueError, match="holds event 'S002', catalog says 'S003'"):
        data[0]


@pytest.fixture
def hko7(tmp_path):
    image = pytest.importorskip("PIL.Image")
    start = datetime(2015, 7, 4, 0, 0)
    for day_offset, n in ((0, 30), (1, 30)):
        for j in range(n):
            if day_offset == 0 and j == 27:
                continue  # a missing frame
            t = start + timedelta(days=day_offset, minutes=6 * j)
            folder = tmp_path / "radarPNG" / f"{t:%Y}" / f"{t:%m}" / f"{t:%d}"
            folder.mkdir(parents=True, exist_ok=True)
            frame = image.fromarray(np.full((16, 16), 8 * j, dtype=np.uint8))
            frame.save(folder / f"RAD{t:%y%m%d%H%M}00.png")
    days = tmp_path / "hko7_rainy_train_days.txt"
    days.write_text("20150704,0.51\n")
    return tmp_path, days


def test_hko7_windows_skip_missing_frames_and_unlisted_days(hko7) -> None:
    root, days = hko7
    data = HKO7(root, days, stride=1)
    assert len(data) == 27 - 25 + 1  # frames 0..26 form the only run long enough
    item = data[2]
    check_item(item, 5, 20, 16)
    frames = torch.cat([item["x"], item["y"]])[:, 0, 0]
    assert frames.tolist() == pytest.approx([8 * j / 255 for j in range(2, 27)], abs=1e-6)
    assert item["start"] == "2015-07-04T00:12:00Z"


def test_hko7_exclude_mask_and_resize(hko7) -> None:
    root, days = hko7
    mask = np.zeros((16, 16), dtype=bool)
    mask[:, :8] = True
    item = HKO7(root, days, size=4, exclude_mask=mask)[0]
    check_item(item, 5, 20, 4)
    assert not item["valid"][:, :, :2].any() and item["valid"][:, :, 2:].all()


def write_meteonet(path, data, dates, **extra) -> None:
    empty = np.array([], dtype=object)
    np.savez(path, data=data, dates=np.array(dates, dtype=object), miss_dates=empty, **extra)


def test_meteonet_old_product_codes_and_gaps(tmp_path) -> None:
    dates = [datetime(2016, 1, 1) + timedelta(minutes=5 * j) for j in range(31) if j != 28]
    data = np.full((30, 12, 16), 30, dtype=np.uint8)
    data[:, 0, :4] = 255  # no data
    data[:, 5, 5] = 0  # below 8 dBZ: no echo
    path = tmp_path / "reflectivity_old_NW_2016_01.1.npz"
    write_meteonet(path, data, dates)
    dataset = MeteoNetReflectivity([path], stride=1)
    assert len(dataset) == 28 - 25 + 1
    item = dataset[0]
    assert item["x"].shape == (5, 12, 16) and item["y"].shape == (20, 12, 16)
    assert item["valid"].shape == (25, 12, 16)
    assert item["x"][0, 3, 3].item() == pytest.approx(40 / 70)
    assert item["x"][0, 5, 5].item() == 0.0 and item["valid"][0, 5, 5]
    assert not item["valid"][:, 0, :4].any() and item["x"][0, 0, 0].item() == 0.0
    assert item["start"] == "2016-01-01T00:00:00Z" and item["source"] == path.name


def test_meteonet_new_product_and_crop(tmp_path) -> None:
    dates = [datetime(2018, 3, 1) + timedelta(minutes=5 * j) for j in range(25)]
    data = np.full((25, 8, 8), 325, dtype=np.int16)
    data[:, 0, 0], data[:, 1, 1] = -200, -100
    path = tmp_path / "reflectivity_new_NW_2018_03.1.npz"
    write_meteonet(path, data, dates, prob=np.zeros_like(data), height=np.zeros_like(data))
    item = MeteoNetReflectivity([path], crop=(0, 0, 4, 4))[0]
    check_item(item, 5, 20, 4)
    assert item["x"][0, 2, 2].item() == pytest.approx(42.5 / 70)
    assert not item["valid"][0, 0, 0] and item["valid"][0, 1, 1] and item["x"][0, 1, 1].item() == 0.0
