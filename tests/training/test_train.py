"""The training entry point (training/train.py): loss falls, outputs, resume, CLI flags."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch.utils.data import Dataset

from model.checkpoint import load_checkpoint, save_checkpoint
from model.stldm import STLDM
from training.config import TrainConfig, build_parser, config_from_args
from training.logging_utils import read_jsonl
from training.schedule import is_decayed, lr_at, param_groups
from training.state import STATE_FILE
from training.train import train


class MovingBlobs(Dataset):
    """Windows of one soft disc moving in a straight line; window ``i`` fixes start and velocity.

    Items as ``training.data``: "x" (T_in, S, S), "y" (T_out, S, S) float32 pixels in [0, 1],
    "valid" (T_in + T_out, S, S) bool (a dead strip on the left), "source", "start".
    """

    def __init__(self, n: int, *, t_in: int, t_out: int, size: int, offset: int = 0) -> None:
        self.n, self.t_in, self.t_out, self.size, self.offset = n, t_in, t_out, size, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        k = i + self.offset
        angle = 2 * math.pi * ((0.37 * k) % 1)
        grid = torch.linspace(0, 1, self.size)
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        frames = []
        for t in range(self.t_in + self.t_out):
            cx = 0.5 + 0.08 * (t - 2) * math.cos(angle)
            cy = 0.5 + 0.08 * (t - 2) * math.sin(angle)
            frames.append(0.8 * torch.sigmoid(25 * (0.2 - ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt())))
        video = torch.stack(frames)
        valid = torch.ones(video.shape, dtype=torch.bool)
        valid[..., :2] = False
        return {"x": video[: self.t_in], "y": video[self.t_in :], "valid": valid,
                "source": "blobs", "start": f"2024-01-01T00:{k:02d}"}


@pytest.fixture
def micro_checkpoint(micro_config, tmp_path):
    """A seeded, untrained micro STLDM saved as a checkpoint folder to start training from."""
    torch.manual_seed(0)
    return save_checkpoint(STLDM(micro_config), tmp_path / "init")


@pytest.fixture
def blobs(micro_config):
    shape = {"t_in": micro_config.t_in, "t_out": micro_config.t_out, "size": micro_config.size}
    return MovingBlobs(8, **shape), MovingBlobs(4, **shape, offset=100)


def micro_run(micro_config, micro_checkpoint, out, **changes) -> TrainConfig:
    base = TrainConfig(init=str(micro_checkpoint), t_in=micro_config.t_in, t_out=micro_config.t_out,
                       size=micro_config.size, out=str(out), batch_size=2, steps=6, lr=3e-3,
                       warmup_steps=2, eval_every=100, val_batches=1, val_members=0, device="cpu",
                       max_minutes=0, log_every=1)
    return dataclasses.replace(base, **changes)


def test_lr_warms_up_from_a_tenth_then_follows_a_cosine_to_min_lr():
    schedule = {"lr": 1e-4, "warmup_steps": 2000, "steps": 200_000, "min_lr": 1e-6}
    assert lr_at(0, **schedule) == pytest.approx(1e-5)
    assert lr_at(1000, **schedule) == pytest.approx(5.5e-5)
    assert lr_at(2000, **schedule) == pytest.approx(1e-4)
    assert lr_at(101_000, **schedule) == pytest.approx((1e-4 + 1e-6) / 2)
    assert lr_at(200_000, **schedule) == pytest.approx(1e-6)
    assert lr_at(250_000, **schedule) == pytest.approx(1e-6)
    rates = [lr_at(s, **schedule) for s in range(0, 200_001, 500)]
    peak = rates.index(max(rates))
    assert all(a <= b for a, b in zip(rates[:peak], rates[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :], strict=False))


def test_weight_decay_skips_norms_biases_and_layer_scales(micro_config):
    model = STLDM(micro_config)
    decayed, plain = param_groups(model, 0.01)
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = [names[id(p)] for p in plain["params"]]
    assert any(n.endswith(".bias") for n in plain_names)
    assert any("layer_scale" in n for n in plain_names)
    assert any(n.endswith("norm.g") for n in plain_names)  # (1, C, 1, 1) gains of ChannelNorm
    assert all(p.ndim >= 2 for p in decayed["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    assert not is_decayed("translator.blocks.0.norm1.weight", torch.nn.Parameter(torch.ones(4, 4)))


def test_training_lowers_the_loss_and_writes_the_log_and_loadable_checkpoints(
        micro_config, micro_checkpoint, blobs, tmp_path):
    config = micro_run(micro_config, micro_checkpoint, tmp_path / "run", steps=30, eval_every=15,
                       val_members=2, val_steps=2)
    out = train(config, datasets=blobs)

    records = read_jsonl(out / "log.jsonl")
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert {"lr", "total", "vae", "constraint", "diffusion", "prior", "seconds",
            "samples_per_s"} <= set(steps[0])
    reconstruction = [r["vae"] + r["constraint"] for r in steps]
    assert sum(reconstruction[-5:]) < 0.9 * sum(reconstruction[:5])
    vals = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [15, 30]
    for name in ("loss_total", "crps_first_estimate", "crps_ensemble", "crps_persistence"):
        assert all(math.isfinite(r[name]) for r in vals), name

    for folder in ("last", "best"):
        model = load_checkpoint(out / folder)
        assert model.config == micro_config
        manifest = json.loads((out / folder / "manifest.json").read_text())
        assert manifest["training"]["config"]["steps"] == 30
        assert manifest["training"]["config"]["out"] == str(tmp_path / "run")
        assert manifest["training"]["data"] == {"source": "given", "windows_train": 8, "windows_val": 4}
        assert manifest["training"]["hardware"]["cpu_count"] >= 1
        assert set(manifest["validation"]) >= {"loss_total", "crps_persistence"}
    best = json.loads((out / "best" / "manifest.json").read_text())
    assert best["validation"]["loss_total"] == min(r["loss_total"] for r in vals)
    assert (out / "last" / STATE_FILE).is_file() and not (out / "best" / STATE_FILE).exists()


def test_training_with_the_ensemble_objective_logs_it_and_lowers_it(micro_config, micro_checkpoint, blobs,
                                                                     tmp_path):
    config = micro_run(micro_config, micro_checkpoint, tmp_path / "run", steps=40,
                       ensemble_weight=1.0, ensemble_members=2, ensemble_steps=2, ensemble_blend=0.0,
                       ensemble_detail=0.0)
    records = [r for r in read_jsonl(train(config, datasets=blobs) / "log.jsonl") if r["kind"] == "train"]
    scores = [r["ensemble"] for r in records]
    assert len(scores) == 40 and all(math.isfinite(v) for v in scores)
    assert sum(scores[-10:]) < 0.9 * sum(scores[:10])
    first = records[0]
    assert first["total"] == pytest.approx(
        sum(first[k] for k in ("vae", "constraint", "diffusion", "prior", "ensemble")), rel=1e-4)


def test_select_skill_keeps_the_checkpoint_with_the_best_sampled_ensemble(
        micro_config, micro_checkpoint, blobs, tmp_path):
    config = micro_run(micro_config, micro_checkpoint, tmp_path / "run", steps=30, eval_every=10,
                       val_batches=2, val_members=2, val_steps=2, val_skill_batches=2, select="skill")
    out = train(config, datasets=blobs)

    vals = [r for r in read_jsonl(out / "log.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [10, 20, 30]
    best = json.loads((out / "best" / "manifest.json").read_text())
    assert best["validation"]["crps_ensemble"] == min(r["crps_ensemble"] for r in vals)
    assert best["training"]["step"] == min(vals, key=lambda r: r["crps_ensemble"])["step"]


def test_validate_averages_the_skill_check_over_its_batches(micro_config, micro_checkpoint, blobs):
    from torch.utils.data import DataLoader

    from training.validation import validate

    model = load_checkpoint(micro_checkpoint)
    loader = DataLoader(blobs[1], batch_size=2)
    kwargs = {"strategy": "end_to_end", "members": 2, "steps": 2, "seed": 0,
              "device": torch.device("cpu"), "autocast": False}
    both = validate(model, loader, max_batches=2, skill_batches=2, **kwargs)
    first = validate(model, loader, max_batches=1, skill_batches=1, **kwargs)
    second = validate(model, list(loader)[1:], max_batches=1, skill_batches=1, **kwargs)
    for name in ("crps_ensemble", "crps_persistence"):
        assert both[name] == pytest.approx((first[name] + second[name]) / 2, rel=1e-6), name
    assert both["loss_total"] != first["loss_total"]  # the loss still averages over both batches


def test_resume_continues_the_step_optimizer_and_weights_of_an_uninterrupted_run(
        micro_config, micro_checkpoint, blobs, tmp_path):
    """Stopped by the time budget after steps 1 and 2, then resumed: bitwise the same run."""
    run = micro_run(micro_config, micro_checkpoint, tmp_path / "whole", ema_decay=0.5)
    train(run, datasets=blobs)
    parts = dataclasses.replace(run, out=str(tmp_path / "parts"), max_minutes=1e-9)
    train(parts, datasets=blobs)
    train(dataclasses.replace(parts, resume=True), datasets=blobs)
    state = torch.load(tmp_path / "parts" / "last" / STATE_FILE, weights_only=True)
    assert state["step"] == 2
    train(dataclasses.replace(parts, resume=True, max_minutes=0), datasets=blobs)

    records = read_jsonl(tmp_path / "parts" / "log.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 7))
    assert [r["step"] for r in records if r["kind"] == "val"] == [1, 2, 6]
    whole = read_jsonl(tmp_path / "whole" / "log.jsonl")
    assert [r["lr"] for r in whole if r["kind"] == "train"] == [
        r["lr"] for r in records if r["kind"] == "train"]

    a = torch.load(tmp_path / "whole" / "last" / STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "parts" / "last" / STATE_FILE, weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["optimizer"]["state"]:
        assert int(b["optimizer"]["state"][key]["step"]) == 6
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a["optimizer"]["state"][key][name], b["optimizer"]["state"][key][name])
    for name, tensor in a["model"].items():  # raw weights (EMA on: the folder holds the average)
        assert torch.equal(tensor, b["model"][name]), name
    assert b["ema"]["updates"] == 6
    ema_a = load_checkpoint(tmp_path / "whole" / "last").state_dict()
    ema_b = load_checkpoint(tmp_path / "parts" / "last").state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert not all(torch.equal(ema_a[k], a["model"][k]) for k in ema_a)


def test_frozen_vae_strategy_leaves_the_vae_weights_unchanged(micro_config, micro_checkpoint, blobs,
                                                              tmp_path):
    out = train(micro_run(micro_config, micro_checkpoint, tmp_path / "run", steps=3,
                          strategy="frozen_vae"), datasets=blobs)
    before = load_checkpoint(micro_checkpoint).state_dict()
    after = load_checkpoint(out / "last").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vae."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("denoiser."))


def test_command_line_flags_map_one_to_one_onto_the_config():
    assert config_from_args([]) == TrainConfig()
    config = config_from_args(["--steps", "7", "--batch-size", "3", "--data", "a.nc", "b", "--synthetic",
                               "--no-bf16", "--resume", "--ema-decay", "0.5", "--max-minutes", "1.5",
                               "--strategy", "frozen_vae", "--out", "runs/x", "--t-in", "4"])
    assert config == dataclasses.replace(
        TrainConfig(), steps=7, batch_size=3, data=("a.nc", "b"), synthetic=True, bf16=False, resume=True,
        ema_decay=0.5, max_minutes=1.5, strategy="frozen_vae", out="runs/x", t_in=4)
    flags = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(vars(build_parser().parse_args([]))) == flags


def test_invalid_settings_raise_value_errors_naming_the_choices(capsys):
    from cli.main import main

    with pytest.raises(ValueError, match="end_to_end"):
        TrainConfig(strategy="everything")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="skill"):
        TrainConfig(select="best")
    with pytest.raises(ValueError, match="val_members"):
        TrainConfig(select="skill", val_members=0)
    assert main(["train", "--strategy", "everything"]) == 2  # routed to training, clean error
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--batch-size" in capsys.readouterr().out
