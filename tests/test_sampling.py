import pytest
import torch
from torch import nn

from midiffusion.config import SamplingConfig
from midiffusion.io import InputError
from midiffusion.diffusion.lmi import local_mutual_information, to_unit
from midiffusion.diffusion.sampling import sample
from midiffusion.diffusion.schedule import DDPMSchedule
from midiffusion.diffusion.unet import UNet

LMI = {"bins": 4, "sigma": 0.15}

pytestmark = pytest.mark.usefixtures("one_thread")


class Oracle(nn.Module):
    """Returns the eps that makes x_0 = target exactly, and records the conditions it was given."""

    def __init__(self, schedule: DDPMSchedule, target: torch.Tensor):
        super().__init__()
        self.schedule, self.target, self.conditions = schedule, target, []

    def forward(self, x, t, cond):
        self.conditions.append(cond)
        alpha_bar = self.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return (x - alpha_bar.sqrt() * self.target.repeat(len(x) // len(self.target), 1, 1, 1)) / (1 - alpha_bar).sqrt()


@pytest.fixture(scope="module")
def short_schedule():
    return DDPMSchedule(timesteps=20)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    unet = UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_res_blocks=1, image_size=16)
    for module in unet.modules():  # untrained but not zero-initialised, so the condition matters
        if isinstance(module, nn.Conv2d) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.1)
    return unet.eval()


@pytest.fixture(scope="module")
def source():
    return torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1


def run(model, schedule, source, seed=0, guided=True, **settings):
    """sample() with SamplingConfig settings over a deterministic, unguided-scale base."""
    config = SamplingConfig(**{"steps": 5, "eta": 0.0, "guidance_scale": 1.0} | settings)
    return sample(model, schedule, source, config, guided=guided, lmi_kwargs=LMI, progress=False,
                  generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_loop_ends_at_the_predicted_x0(short_schedule, source, sampler, eta):
    target = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    oracle = Oracle(short_schedule, target)
    out = run(oracle, short_schedule, source, sampler=sampler, eta=eta)
    torch.testing.assert_close(out.images, target, atol=1e-4, rtol=0)
    expected_calls = 20 if sampler == "ddpm" else 5
    assert out.network_calls == len(oracle.conditions) == expected_calls
    assert out.lmi_calls == expected_calls + 1


def test_condition_is_lmi_of_source_with_the_sample(short_schedule, source):
    oracle = Oracle(short_schedule, torch.zeros_like(source))
    run(oracle, short_schedule, source, steps=3)
    anchor = to_unit(source)
    self_lmi = local_mutual_information(anchor, anchor, **LMI)
    first = oracle.conditions[0]
    assert first.shape == (2, 2, 16, 16)
    torch.testing.assert_close(first[:, 1:], self_lmi)
    assert not torch.allclose(oracle.conditions[0][:, :1], oracle.conditions[-1][:, :1])  # recomputed each step


def test_unguided_drops_the_condition(short_schedule, source):
    oracle = Oracle(short_schedule, torch.zeros_like(source))
    out = run(oracle, short_schedule, source, guided=False, guidance_scale=3.0)
    assert all(cond is None for cond in oracle.conditions)
    assert (out.network_calls, out.lmi_calls) == (5, 0)


def test_shape_range_and_determinism(model, short_schedule, source):
    first = run(model, short_schedule, source).images
    assert first.shape == source.shape and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, run(model, short_schedule, source).images)
    assert not torch.equal(first, run(model, short_schedule, source, seed=1).images)


def test_samplers_and_guidance_modes_differ(model, short_schedule, source):
    ddim = run(model, short_schedule, source)
    ddpm = run(model, short_schedule, source, sampler="ddpm")
    unguided = run(model, short_schedule, source, guided=False)
    cfg = run(model, short_schedule, source, guidance_scale=2.0)
    assert ddpm.network_calls == 20 and cfg.network_calls == 10
    outputs = [ddim.images, ddpm.images, unguided.images, cfg.images]
    for i, a in enumerate(outputs):
        assert torch.isfinite(a).all()
        for b in outputs[i + 1 :]:
            assert not torch.allclose(a, b)


def test_training_mode_is_restored(model, short_schedule, source):
    model.train()
    run(model, short_schedule, source, steps=1)
    assert model.training
    model.eval()


def test_bad_arguments(model, short_schedule, source):
    with pytest.raises(InputError, match="sampler"):
        run(model, short_schedule, source, sampler="euler")
    with pytest.raises(InputError, match="source"):
        run(model, short_schedule, source[:, 0])
