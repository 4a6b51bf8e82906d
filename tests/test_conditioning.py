"""Tests that pin the method's conditioning down (issue 14 item 7; docs/method.md, "Training" and
"Sampling"): what condition training feeds the network, what the sampler feeds it, and that the two
agree (anchor, pairing, dropped condition, guidance, LMI settings)."""

import numpy as np
import pytest
import torch
from torch import nn

import midiffusion.diffusion.sampling as sampling_module
import midiffusion.diffusion.train as train_module
from midiffusion.config import DiffusionConfig, SamplingConfig
from midiffusion.diffusion.lmi import lmi_condition, local_mutual_information, to_unit
from midiffusion.diffusion.model import build_model, load_model, save_model
from midiffusion.diffusion.sampling import _Denoiser, sample
from midiffusion.diffusion.schedule import DDPMSchedule
from midiffusion.diffusion.translate import sample_slices
from midiffusion.diffusion.unet import UNet

LMI = {"bins": 4, "sigma": 0.15}  # cheap and non-default: a dropped setting shows
TIGHT = {"atol": 1e-6, "rtol": 0}

pytestmark = pytest.mark.usefixtures("one_thread")


def brain_slices(n: int, seed: int) -> torch.Tensor:
    """(n, 1, 16, 16) in [-1, 1]: a textured disk of random radius on a -1 background."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    radius = 4 + 3 * torch.rand(n, 1, 1, 1, generator=gen)
    inside = (yy - 7.5) ** 2 + (xx - 7.5) ** 2 < radius**2
    texture = torch.rand(n, 1, 16, 16, generator=gen) * 1.6 - 0.7
    return torch.where(inside, texture, torch.full_like(texture, -1.0))


class Recorder(nn.Module):
    """A stub eps network with real parameters (Adam and clipping work) that records every call as
    (x, t, cond) and returns a 1 x 1 convolution of [x, cond] (None counts as zeros)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.calls = []

    def forward(self, x, t, cond=None):
        self.calls.append((x.detach().clone(), t.clone(), None if cond is None else cond.detach().clone()))
        if cond is None:
            cond = x.new_zeros(len(x), 2, *x.shape[2:])
        return self.conv(torch.cat([x, cond], dim=1))


def train_config(**overrides) -> DiffusionConfig:
    settings = dict(
        image_size=16, batch_size=3, timesteps=10, cond_dropout=0.0, anchor_contrast_p=0.0, pairing="x_t",
        random_flip=False, lmi_bins=LMI["bins"], lmi_sigma=LMI["sigma"], seed=3,
    )
    return DiffusionConfig(**settings | overrides)


def one_train_step(config: DiffusionConfig, monkeypatch):
    """One real _train_step on a _new_run whose UNet is a Recorder.

    Returns the recorded (x, t, cond) and the batch it drew, (x0, t, noise), reproduced by
    re-seeding the run's generator and drawing as _train_step does: index, then t, then noise.
    """
    monkeypatch.setattr(train_module, "build_model", lambda cfg: Recorder())
    images = brain_slices(6, seed=0)
    run = train_module._new_run(config, torch.device("cpu"))
    loss = train_module._train_step(run, images, train_module.self_lmi_cache(images, config), config)
    assert np.isfinite(loss) and len(run.model.calls) == 1
    gen = torch.Generator().manual_seed(config.seed)
    index = torch.randint(len(images), (config.batch_size,), generator=gen)
    t = torch.randint(config.timesteps, (config.batch_size,), generator=gen)
    noise = torch.randn((config.batch_size, 1, 16, 16), generator=gen)
    x, t_seen, cond = run.model.calls[0]
    # The reproduction is right: the network saw x_t = q_sample(x0, t, noise) at these t.
    assert torch.equal(t_seen, t)
    torch.testing.assert_close(x, run.schedule.add_noise(images[index], noise, t), **TIGHT)
    return x, cond, images[index], t, noise, run.schedule


def test_training_condition_is_lmi_of_the_clean_image_with_x_t(monkeypatch):
    """Catches a training condition that is not [LMI(x0, x_t), LMI(x0, x0)] with the clean image
    as anchor: anchor x_t or the noise, channels swapped, LMI of [-1, 1] images instead of [0, 1],
    the self channel taken from the wrong slices of the cache, or the config's LMI settings dropped."""
    x_t, cond, x0, _, _, _ = one_train_step(train_config(), monkeypatch)
    anchor = to_unit(x0)
    assert cond.shape == (3, 2, 16, 16)
    torch.testing.assert_close(cond[:, :1], local_mutual_information(anchor, to_unit(x_t), **LMI), **TIGHT)
    torch.testing.assert_close(cond[:, 1:], local_mutual_information(anchor, anchor, **LMI), **TIGHT)
    torch.testing.assert_close(cond, lmi_condition(anchor, to_unit(x_t), **LMI), **TIGHT)
    # The settings matter here: the default-setting LMI is a different map.
    assert not torch.allclose(cond[:, :1], local_mutual_information(anchor, to_unit(x_t)), atol=1e-3)


def test_pairing_x_t_plus_1_pairs_the_anchor_with_the_next_noise_level(monkeypatch):
    """Catches pairing="x_t_plus_1" being ignored (cross channel LMI(x0, x_t)), x_{t+1} drawn with
    fresh noise or at the wrong step, the network input becoming x_{t+1}, or the self channel changing."""
    x_t, cond, x0, t, noise, schedule = one_train_step(train_config(pairing="x_t_plus_1"), monkeypatch)
    assert (t < schedule.timesteps - 1).all()  # this seed draws no clamped t + 1
    anchor = to_unit(x0)
    x_next = schedule.add_noise(x0, noise, t + 1)
    torch.testing.assert_close(cond[:, :1], local_mutual_information(anchor, to_unit(x_next), **LMI), **TIGHT)
    torch.testing.assert_close(cond[:, 1:], local_mutual_information(anchor, anchor, **LMI), **TIGHT)
    paired_with_x_t = local_mutual_information(anchor, to_unit(x_t), **LMI)
    differs = (cond[:, :1] - paired_with_x_t).abs().amax(dim=(1, 2, 3))
    assert (differs > 1e-3).all(), differs


def test_anchor_augmentation_remaps_the_anchor_of_both_channels(monkeypatch):
    """Catches anchor_contrast_p = 1 remapping the anchor of one channel only: the cross channel
    still LMI(x0, x_t), or the self channel the cached LMI(x0, x0) instead of LMI(anchor, anchor) of
    the remapped anchor; also random_contrast getting anything but the unit-range clean image."""
    seen = []

    def invert_brain(unit, knots, generator=None):
        seen.append((unit.clone(), knots))
        return torch.where(unit > 0, 1 - unit, torch.zeros_like(unit))

    monkeypatch.setattr(train_module, "random_contrast", invert_brain)
    config = train_config(anchor_contrast_p=1.0, anchor_contrast_knots=4)
    x_t, cond, x0, _, _, _ = one_train_step(config, monkeypatch)
    assert len(seen) == 1 and seen[0][1] == 4
    torch.testing.assert_close(seen[0][0], to_unit(x0), **TIGHT)  # every anchor remapped (p = 1)
    remapped = torch.where(to_unit(x0) > 0, 1 - to_unit(x0), torch.zeros_like(x0))
    torch.testing.assert_close(cond[:, :1], local_mutual_information(remapped, to_unit(x_t), **LMI), **TIGHT)
    torch.testing.assert_close(cond[:, 1:], local_mutual_information(remapped, remapped, **LMI), **TIGHT)
    # The remap is visible in both channels (so the checks above can tell the anchors apart).
    original = lmi_condition(to_unit(x0), to_unit(x_t), **LMI)
    for channel in (0, 1):
        assert not torch.allclose(cond[:, channel], original[:, channel], atol=1e-3)


@pytest.fixture(scope="module")
def unet():
    """A tiny UNet whose output depends on its input (the zero-initialised convolutions randomised)."""
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_res_blocks=1, image_size=16)
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.1)
    return model.eval()


def test_dropped_condition_is_zeros_as_in_guided_and_unguided_sampling(monkeypatch, unet):
    """Catches training dropout and sampling disagreeing on "no condition": a dropped training
    condition that is not all zeros in both channels, a guided sampler whose unconditional half is
    not zeros, an unguided sampler passing a condition, or a UNet that treats cond=None otherwise
    than zeros."""
    _, dropped, _, _, _, _ = one_train_step(train_config(cond_dropout=0.999), monkeypatch)
    assert dropped.shape == (3, 2, 16, 16) and torch.equal(dropped, torch.zeros_like(dropped))

    source = brain_slices(2, seed=1)
    schedule = DDPMSchedule(timesteps=10)
    config = SamplingConfig(sampler="ddim", steps=2, eta=0.0, guidance_scale=3.0)
    guided = Recorder()
    sample(guided, schedule, source, config, lmi_kwargs=LMI, generator=torch.Generator().manual_seed(0), progress=False)
    assert len(guided.calls) == 2
    for x, _, cond in guided.calls:
        assert x.shape == (4, 1, 16, 16) and cond.shape == (4, 2, 16, 16)
        assert torch.equal(cond[2:], torch.zeros_like(dropped[:2]))  # unconditional half = training's dropped
        assert cond[:2].abs().sum() > 0

    unguided = Recorder()
    sample(unguided, schedule, source, config, guided=False, generator=torch.Generator().manual_seed(0),
           progress=False)
    assert len(unguided.calls) == 2 and all(cond is None for _, _, cond in unguided.calls)

    x, t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([3, 7])
    with torch.no_grad():
        none, zeros = unet(x, t, None), unet(x, t, torch.zeros(2, 2, 16, 16))
        ones = unet(x, t, torch.ones(2, 2, 16, 16))
    torch.testing.assert_close(none, zeros, atol=0, rtol=0)
    assert not torch.allclose(none, ones, atol=1e-3)  # the condition reaches the output


class LinearInCondition(nn.Module):
    """eps = 0.1 x + 0.5 cond_0 - 2 cond_1: a known eps for the conditional and the zeroed condition."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, cond):
        self.calls += 1
        return 0.1 * x + 0.5 * cond[:, :1] - 2 * cond[:, 1:]


def test_guided_eps_is_unconditional_plus_scale_times_difference():
    """Catches a wrong classifier-free guidance formula (scale ignored, eps_c and eps_u swapped,
    (1 + s) weighting, a non-zero unconditional condition) in _Denoiser and in sample's use of it."""
    source = brain_slices(2, seed=1)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    cond = lmi_condition(to_unit(source), to_unit(x), **LMI)
    eps_c = 0.1 * x + 0.5 * cond[:, :1] - 2 * cond[:, 1:]
    eps_u = 0.1 * x
    expected = eps_u + 3.0 * (eps_c - eps_u)
    assert (eps_c - eps_u).abs().mean() > 0.1  # guidance changes something

    model = LinearInCondition()
    denoiser = _Denoiser(model, source, guided=True, scale=3.0, lmi_kwargs=LMI)
    torch.testing.assert_close(denoiser(x, 5), expected, atol=1e-5, rtol=0)
    assert model.calls == 1 and denoiser.evaluations == 2  # one double batch
    torch.testing.assert_close(_Denoiser(model, source, True, 1.0, LMI)(x, 5), eps_c, atol=1e-5, rtol=0)

    # One DDIM step of sample() from x_T to x_0 takes the same guided eps.
    schedule = DDPMSchedule(timesteps=10)
    config = SamplingConfig(sampler="ddim", steps=1, eta=0.0, guidance_scale=3.0, clip_x0=False)
    out = sample(model, schedule, source, config, lmi_kwargs=LMI, generator=torch.Generator().manual_seed(4),
                 progress=False)
    step = schedule.ddim_step(expected, 9, -1, x, eta=0.0, clip=False).prev_sample
    torch.testing.assert_close(out.images, step.clamp(-1, 1), atol=1e-5, rtol=0)
    assert out.network_calls == 2


@pytest.mark.parametrize("sampler, scale", [("ddim", 1.0), ("ddpm", 1.0), ("ddim", 3.0)])
def test_sampling_condition_is_lmi_of_the_source_with_x_t_at_every_step(sampler, scale):
    """Catches a sampling condition that is not [LMI(source, x_t), LMI(source, source)] at every
    step: computed once and reused, taken against x_{t-1} or the predicted x0, anchored on x_t,
    without to_unit, or with the channels swapped (also the conditional half of a guided batch)."""
    source = brain_slices(2, seed=1)
    schedule = DDPMSchedule(timesteps=10)
    model = Recorder()
    config = SamplingConfig(sampler=sampler, steps=4, eta=1.0, guidance_scale=scale)
    sample(model, schedule, source, config, lmi_kwargs=LMI, generator=torch.Generator().manual_seed(0), progress=False)
    expected_t = list(range(9, -1, -1)) if sampler == "ddpm" else schedule.ddim_timesteps(4).tolist()
    assert [int(t[0]) for _, t, _ in model.calls] == expected_t
    anchor = to_unit(source)
    self_lmi = local_mutual_information(anchor, anchor, **LMI)
    for x, _, cond in model.calls:
        x, cond = x[:2], cond[:2]  # the conditional half when guided
        torch.testing.assert_close(cond[:, :1], local_mutual_information(anchor, to_unit(x), **LMI), **TIGHT)
        torch.testing.assert_close(cond[:, 1:], self_lmi, **TIGHT)
    first, last = model.calls[0][2][:2, :1], model.calls[-1][2][:2, :1]
    assert not torch.allclose(first, last, atol=1e-3)  # x_t moved, so a stale condition would show


def test_sampling_uses_the_model_files_lmi_settings(tmp_path, monkeypatch):
    """Catches translate.sample_slices / sample computing the condition with default or
    hard-coded LMI settings instead of those saved in model.pt (bins, sigma, patch, window)."""
    config = DiffusionConfig(
        image_size=16, base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_res_blocks=1,
        timesteps=10, lmi_bins=5, lmi_sigma=0.11, lmi_patch=5, lmi_window=1,
    )
    torch.manual_seed(0)
    save_model(build_model(config), config, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", "cpu")
    assert loaded.config.lmi_kwargs() == {"patch": 5, "window": 1, "bins": 5, "sigma": 0.11}

    recorded = []
    for name in ("lmi_condition", "local_mutual_information"):
        real = getattr(sampling_module, name)
        monkeypatch.setattr(sampling_module, name,
                            lambda *a, _real=real, _name=name, **k: recorded.append((_name, k)) or _real(*a, **k))
    slices = brain_slices(2, seed=1).numpy()
    sampling = SamplingConfig(sampler="ddim", steps=2, eta=0.0, guidance_scale=1.0, batch_size=2)
    out = sample_slices(loaded, slices, sampling, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 1, 16, 16)
    assert [name for name, _ in recorded] == ["local_mutual_information", "lmi_condition", "lmi_condition"]
    for _, kwargs in recorded:
        assert {key: kwargs.get(key) for key in ("patch", "window", "bins", "sigma")} == loaded.config.lmi_kwargs()
