"""The end-to-end objective and the training strategies (training/objective.py, STLDM.md 5)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.stldm import STLDM
from training.objective import STRATEGIES, apply_strategy, stldm_loss


def moving_blob_batch(config) -> tuple[torch.Tensor, torch.Tensor]:
    """x (2, T_in, S, S), y (2, T_out, S, S): a soft disc moving right, and its mirror image."""
    size, frames = config.size, config.t_in + config.t_out
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    video = torch.stack([
        torch.sigmoid(10 * (0.3 - ((xx - 0.3 - 0.1 * k) ** 2 + (yy - 0.5) ** 2).sqrt()))
        for k in range(frames)
    ])
    data = torch.stack((video, video.flip(-1)))
    return data[:, : config.t_in], data[:, config.t_in :]


@pytest.fixture
def micro_model(micro_config) -> STLDM:
    torch.manual_seed(0)
    return STLDM(micro_config).train()


@pytest.fixture
def batch(micro_config) -> tuple[torch.Tensor, torch.Tensor]:
    return moving_blob_batch(micro_config)


def seeded_loss(model, x, y, seed: int, **kwargs):
    torch.manual_seed(seed)
    return stldm_loss(model, x, y, **kwargs)


def grads_of(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def has_signal(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_loss_terms_are_finite_and_sum_to_the_total(micro_model, batch):
    terms = seeded_loss(micro_model, *batch, 0)
    values = terms.as_floats()
    assert set(values) == {"total", "vae", "constraint", "diffusion", "prior"}
    for name, tensor in vars(terms).items():
        assert tensor.ndim == 0, name
        assert torch.isfinite(tensor), name
        assert tensor >= 0, name
    expected = terms.vae + terms.constraint + terms.diffusion + terms.prior
    torch.testing.assert_close(terms.total, expected)


def test_prior_term_is_tiny_for_the_sigmoid_schedule(micro_model, batch):
    """q(x_T | x_0) is nearly N(0, I) after 50 steps: alpha_bar_49 is about 6e-6."""
    assert seeded_loss(micro_model, *batch, 0).prior < 1e-3


def test_overfitting_one_batch_lowers_the_loss_clearly(micro_model, batch):
    x, y = batch

    def evaluate() -> tuple[float, float, float]:
        """Mean (total, vae, constraint) over 8 fixed draws of t, noise and latents."""
        with torch.no_grad():
            terms = [seeded_loss(micro_model, x, y, 100 + s).as_floats() for s in range(8)]
        return tuple(sum(t[name] for t in terms) / len(terms)
                     for name in ("total", "vae", "constraint"))

    before = evaluate()
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(micro_model.parameters(), lr=1e-3)
    for _ in range(60):
        loss = stldm_loss(micro_model, x, y).total
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = evaluate()
    assert after[0] < 0.7 * before[0], (before, after)
    assert after[1] < 0.8 * before[1], (before, after)  # VAE reconstruction
    assert after[2] < 0.8 * before[2], (before, after)  # first estimate (L_C)


def test_end_to_end_strategy_trains_everything(micro_model):
    params = apply_strategy(micro_model, "end_to_end")
    assert len(params) == len(list(micro_model.parameters()))
    assert all(p.requires_grad for p in micro_model.parameters())


def test_frozen_vae_strategy_freezes_only_the_vae(micro_model, batch):
    params = apply_strategy(micro_model, "frozen_vae")
    assert not any(p.requires_grad for p in micro_model.vae.parameters())
    assert all(p.requires_grad for p in micro_model.translator.parameters())
    assert all(p.requires_grad for p in micro_model.denoiser.parameters())
    expected = list(micro_model.translator.parameters()) + list(micro_model.denoiser.parameters())
    assert {id(p) for p in params} == {id(p) for p in expected}

    terms = seeded_loss(micro_model, *batch, 0, strategy="frozen_vae")
    torch.testing.assert_close(terms.total, terms.constraint + terms.diffusion + terms.prior)
    terms.total.backward()
    assert all(g is None for g in grads_of(micro_model.vae))
    assert has_signal(micro_model.translator) and has_signal(micro_model.denoiser)


def test_frozen_vae_translator_strategy_trains_only_the_denoiser(micro_model, batch):
    params = apply_strategy(micro_model, "frozen_vae_translator")
    assert {id(p) for p in params} == {id(p) for p in micro_model.denoiser.parameters()}
    assert not micro_model.vae.training and not micro_model.translator.training

    terms = seeded_loss(micro_model, *batch, 0, strategy="frozen_vae_translator")
    torch.testing.assert_close(terms.total, terms.diffusion + terms.prior)
    terms.total.backward()
    assert all(g is None for g in grads_of(micro_model.vae))
    assert all(g is None for g in grads_of(micro_model.translator))
    assert has_signal(micro_model.denoiser)


def test_translator_strategy_trains_only_the_translator(micro_model, batch):
    params = apply_strategy(micro_model, "translator")
    assert {id(p) for p in params} == {id(p) for p in micro_model.translator.parameters()}
    assert not micro_model.vae.training and not micro_model.denoiser.training

    terms = seeded_loss(micro_model, *batch, 0, strategy="translator")
    torch.testing.assert_close(terms.total, terms.constraint + terms.diffusion + terms.prior)
    terms.total.backward()
    assert all(g is None for g in grads_of(micro_model.vae))
    assert all(g is None for g in grads_of(micro_model.denoiser))
    assert has_signal(micro_model.translator)  # the constraint and, through the condition, the diffusion


def test_vae_strategy_trains_only_the_vae_on_its_reconstruction(micro_model, batch):
    params = apply_strategy(micro_model, "vae")
    assert {id(p) for p in params} == {id(p) for p in micro_model.vae.parameters()}
    assert not micro_model.translator.training and not micro_model.denoiser.training

    terms = seeded_loss(micro_model, *batch, 0, strategy="vae")
    torch.testing.assert_close(terms.total, terms.vae)
    assert terms.vae > 0 and terms.diffusion == 0 and terms.constraint == 0
    terms.total.backward()
    assert has_signal(micro_model.vae)
    assert all(g is None for g in grads_of(micro_model.translator))
    assert all(g is None for g in grads_of(micro_model.denoiser))


def test_decoder_strategy_trains_the_decoder_alone_and_keeps_the_latents(micro_model, batch):
    x = torch.cat(batch[:2], dim=1).flatten(0, 1)[:, None]
    latents_before = micro_model.vae.encode(x)[0].detach()
    params = apply_strategy(micro_model, "decoder")
    assert {id(p) for p in params} == {id(p) for p in micro_model.vae.decoder.parameters()}
    assert not micro_model.vae.encoder.training and micro_model.vae.decoder.training

    terms = seeded_loss(micro_model, *batch, 0, strategy="decoder")
    torch.testing.assert_close(terms.total, terms.vae)
    assert terms.vae > 0 and terms.diffusion == 0 and terms.constraint == 0
    terms.total.backward()
    assert has_signal(micro_model.vae.decoder)
    for part in (micro_model.vae.encoder, micro_model.translator, micro_model.denoiser):
        assert all(g is None for g in grads_of(part))
    torch.optim.SGD(params, lr=1.0).step()
    torch.testing.assert_close(micro_model.vae.encode(x)[0], latents_before)


def test_frozen_translator_keeps_its_batchnorm_statistics(micro_model, batch):
    apply_strategy(micro_model, "frozen_vae_translator")
    before = {k: v.clone() for k, v in micro_model.translator.state_dict().items()}
    seeded_loss(micro_model, *batch, 0, strategy="frozen_vae_translator")
    after = micro_model.translator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_strategy_raises_naming_the_strategies(micro_model, batch):
    with pytest.raises(ValueError, match="frozen_vae_translator"):
        apply_strategy(micro_model, "staged")
    with pytest.raises(ValueError, match="end_to_end"):
        stldm_loss(micro_model, *batch, strategy="staged")
    assert STRATEGIES == ("end_to_end", "frozen_vae", "frozen_vae_translator", "translator", "vae",
                          "decoder")


def test_unknown_cond_drop_raises(micro_model, batch):
    with pytest.raises(ValueError, match="cond_drop"):
        stldm_loss(micro_model, *batch, cond_drop="pixel")


def test_valid_mask_without_output_pixels_zeroes_the_constraint(micro_model, micro_config, batch):
    x, y = batch
    valid = torch.ones(2, micro_config.t_in + micro_config.t_out, micro_config.size,
                       micro_config.size, dtype=torch.bool)
    valid[:, micro_config.t_in :] = False
    terms = seeded_loss(micro_model, x, y, 0, valid=valid)
    assert terms.constraint == 0
    assert terms.vae > 0 and torch.isfinite(terms.total)


def test_all_true_valid_mask_equals_no_mask(micro_model, micro_config, batch):
    x, y = batch
    valid = torch.ones(2, micro_config.t_in + micro_config.t_out, micro_config.size,
                       micro_config.size, dtype=torch.bool)
    masked = seeded_loss(micro_model, x, y, 0, valid=valid)
    plain = seeded_loss(micro_model, x, y, 0)
    torch.testing.assert_close(masked.constraint, plain.constraint)
    torch.testing.assert_close(masked.vae, plain.vae)


def test_masked_pixels_do_not_count_in_the_reconstruction(micro_model, micro_config, batch):
    """No-data is not dry: garbage under a False mask leaves the loss unchanged."""
    x, y = batch
    valid = torch.ones(2, micro_config.t_in + micro_config.t_out, micro_config.size,
                       micro_config.size, dtype=torch.bool)
    valid[..., :4] = False
    clean = seeded_loss(micro_model, x, y, 0, valid=valid)
    y_garbage = y.clone()
    y_garbage[..., :4] = 1.0
    garbage = seeded_loss(micro_model, x, y_garbage, 0, valid=valid)
    torch.testing.assert_close(garbage.constraint, clean.constraint)
    unmasked = seeded_loss(micro_model, x, y_garbage, 0)
    assert (unmasked.constraint - seeded_loss(micro_model, x, y, 0).constraint).abs() > 1e-4


@pytest.mark.parametrize("cond_drop", ["sample", "batch"])
def test_cond_drop_modes_run(micro_model, batch, cond_drop):
    terms = seeded_loss(micro_model, *batch, 0, cond_drop=cond_drop)
    assert torch.isfinite(terms.total)
    terms.total.backward()
    assert has_signal(micro_model.denoiser)


@pytest.mark.parametrize("cond_drop", ["sample", "batch"])
def test_diffusion_gradient_reaches_translator_and_encoder_unless_dropped(micro_config, batch,
                                                                          cond_drop):
    """mu is not detached (STLDM.md 2); with the condition always dropped it has no effect."""
    for drop_prob, expect_signal in ((0.0, True), (1.0, False)):
        config = dataclasses.replace(
            micro_config, diffusion=dataclasses.replace(micro_config.diffusion,
                                                        cond_drop_prob=drop_prob))
        torch.manual_seed(0)
        model = STLDM(config).train()
        seeded_loss(model, *batch, 0, cond_drop=cond_drop).diffusion.backward()
        assert has_signal(model.translator) is expect_signal, drop_prob
        assert has_signal(model.vae.encoder) is expect_signal, drop_prob
        assert has_signal(model.denoiser)
