"""``detail="renew"`` (model/detail.py): each member's detail starts from the observed one and
decorrelates with lead time, keeping its amplitude and place; members are reproducible and do not
depend on their batch-mates."""

from __future__ import annotations

import math

import pytest
import torch

from model.detail import noise_filter, renewed_detail, shaped_noise
from model.sampler import member_generator

SIDE = 64


def cells(seed: int = 0) -> torch.Tensor:
    """(1, SIDE, SIDE) detail of small cells in the left half, none in the right half."""
    gen = torch.Generator().manual_seed(seed)
    detail = torch.randn(1, SIDE, SIDE, generator=gen) * 0.1
    detail[..., SIDE // 2:] = 0
    return detail


def generators(seeds: list[int], members: int) -> list[torch.Generator]:
    return [member_generator(s, k, "detail") for s in seeds for k in range(members)]


def test_the_process_decorrelates_from_the_observed_detail_as_its_lifetime_says() -> None:
    detail = cells()
    lifetime, step, members = 30.0, 5.0, 64
    out = renewed_detail(detail, generators([0], members), leads=12, step_minutes=step, lifetime=lifetime)
    assert out.shape == (1, members, 12, SIDE, SIDE)
    left = detail[0, :, : SIDE // 2].flatten()
    for lead in (1, 6, 12):
        fields = out[0, :, lead - 1, :, : SIDE // 2].flatten(1)
        corr = torch.stack([torch.corrcoef(torch.stack((f, left)))[0, 1] for f in fields]).mean()
        assert corr == pytest.approx(math.exp(-lead * step / lifetime), abs=0.06)
        amplitude = fields.square().mean().sqrt() / left.square().mean().sqrt()
        assert amplitude == pytest.approx(1.0, abs=0.15)  # renewed, not faded
    assert out[0, 0, -1].sub(out[0, 1, -1]).abs().mean() > 0.05  # members have their own detail


def test_noise_stays_where_the_detail_is() -> None:
    detail = cells()
    noise = shaped_noise(*noise_filter(detail),
                         torch.randn(1, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(1)))
    inside = noise[..., : SIDE // 2 - 8].abs().mean()
    outside = noise[..., SIDE // 2 + 8:].abs().mean()  # beyond the envelope's reach: no detail there
    assert inside > 0.05 and outside == 0


def test_a_member_is_reproducible_and_ignores_its_batch_mates() -> None:
    one = renewed_detail(cells(), generators([7], 2), leads=4, step_minutes=5, lifetime=60)
    detail = torch.cat((cells(3), cells()))
    two = renewed_detail(detail, generators([9, 7], 2), leads=4, step_minutes=5, lifetime=60)
    torch.testing.assert_close(two[1], one[0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(two[0], one[0])


def test_a_bad_lifetime_or_generator_count_is_refused() -> None:
    with pytest.raises(ValueError, match="lifetime must be > 0"):
        renewed_detail(cells(), generators([0], 2), leads=2, step_minutes=5, lifetime=0)
    with pytest.raises(ValueError, match="K per request"):
        renewed_detail(torch.cat((cells(), cells())), generators([0], 3), leads=2, step_minutes=5,
                       lifetime=60)


@torch.inference_mode()
def test_renewed_members_start_from_the_extrapolated_frame_and_differ_in_their_detail(tiny_model) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(1, tiny_model.config.t_in, 64, 64, generator=gen)
    options = {"members": 3, "steps": 2, "seed": 5, "extrapolation_lifetime": 1e4}
    # the extrapolation blend all but total: the faded members are all the last frame ...
    faded = tiny_model.forecast(x, detail="fade", detail_lifetime=1e4, **options).members
    assert faded[0, 0, -1].sub(faded[0, 1, -1]).abs().max() < 1e-5
    # ... and so are the renewed ones while their detail has hardly been renewed
    lasting = tiny_model.forecast(x, detail="renew", detail_lifetime=1e4, **options).members
    torch.testing.assert_close(lasting[:, :, 0], faded[:, :, 0], atol=0.05, rtol=0)
    # a short lifetime: each member its own detail by the last lead, the same one on every call
    renewed = tiny_model.forecast(x, detail="renew", detail_lifetime=30.0, **options).members
    assert renewed[0, 0, -1].sub(renewed[0, 1, -1]).abs().mean() > 0.01
    again = tiny_model.forecast(x, detail="renew", detail_lifetime=30.0, **options).members
    torch.testing.assert_close(renewed, again, atol=0, rtol=0)
    with pytest.raises(ValueError, match="detail must be one of"):
        tiny_model.forecast(x, detail="sideways", detail_lifetime=30.0, **options)
