"""The sampling levers of issue 16: an SDEdit start (a given image noised to step t0) and LMI
gradient guidance (the predicted x0 moved up the gradient of LMI(source, x0)), both off by default
and in config/paper.yaml."""

import jsonschema
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from midiffusion import cli
from midiffusion.config import DiffusionConfig, SamplingConfig, schema
from midiffusion.io import InputError, load_volume, save_volume
from midiffusion.diffusion.lmi import local_mutual_information, to_unit
from midiffusion.diffusion.model import build_model, save_model
from midiffusion.diffusion.sampling import sample
from midiffusion.diffusion.schedule import DDPMSchedule
from midiffusion.diffusion.translate import translate_volume
from midiffusion.diffusion.unet import UNet

from conftest import ROOT

LMI = {"bins": 4, "sigma": 0.15}

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(nn.Module):
    """Returns the eps that makes x_0 = target exactly; records every (x_t, t) it is given."""

    def __init__(self, schedule: DDPMSchedule, target: torch.Tensor):
        super().__init__()
        self.schedule, self.target, self.calls = schedule, target, []

    def forward(self, x, t, cond):
        self.calls.append((x.clone(), int(t[0])))
        alpha_bar = self.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return (x - alpha_bar.sqrt() * self.target) / (1 - alpha_bar).sqrt()


@pytest.fixture(scope="module")
def schedule():
    return DDPMSchedule(timesteps=20)


def images(seed: int, size: int = 16) -> torch.Tensor:
    """(2, 1, size, size) in [-1, 1]: a smooth blob plus texture, so that LMI has structure to see."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    blob = torch.exp(-3 * (yy**2 + xx**2))
    return (blob + 0.3 * torch.rand(2, 1, size, size, generator=gen)).clamp(0, 1) * 2 - 1


def run(model, schedule, source, start=None, seed=0, **settings):
    config = SamplingConfig(**{"steps": 5, "eta": 0.0, "guidance_scale": 1.0} | settings)
    return sample(model, schedule, source, config, start=start, lmi_kwargs=LMI, progress=False,
                  generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sdedit_start_at_t0_zero_returns_the_start(schedule, sampler):
    start = images(1) * 1.2  # out of range on purpose: the final clamp still applies
    recorder = Recorder(schedule, torch.zeros_like(start))
    out = run(recorder, schedule, images(2), start=start, sampler=sampler, start_t0=0.0, lmi_gradient_scale=0.5)
    assert torch.equal(out.images, start.clamp(-1, 1))
    assert out.network_calls == 0 and recorder.calls == []


@pytest.mark.parametrize("sampler, calls", [("ddim", 5), ("ddpm", 20)])
def test_sdedit_start_at_t0_one_runs_the_whole_chain_like_noise(schedule, sampler, calls):
    source, start = images(2), images(1)
    out = run(Recorder(schedule, images(3)), schedule, source, start=start, sampler=sampler, start_t0=1.0)
    noise = run(Recorder(schedule, images(3)), schedule, source, sampler=sampler)
    assert out.images.shape == noise.images.shape == source.shape
    assert out.images.min() >= -1 and out.images.max() <= 1 and out.network_calls == noise.network_calls == calls
    torch.testing.assert_close(out.images, images(3), atol=1e-4, rtol=0)  # the chain still ends at the model's x0


@pytest.mark.parametrize("sampler, first_steps", [("ddim", [5, 0]), ("ddpm", list(range(9, -1, -1)))])
def test_sdedit_start_runs_only_the_steps_at_or_below_t0_from_the_noised_start(schedule, sampler, first_steps):
    """t0 = 0.5 of T = 20 is step 9: DDIM (19, 14, 10, 5, 0) keeps 5 and 0, DDPM keeps 9 .. 0; the first
    x_t is q(x_t | start) with the generator's first noise."""
    start = images(1)
    recorder = Recorder(schedule, images(3))
    run(recorder, schedule, images(2), start=start, sampler=sampler, start_t0=0.5)
    assert [t for _, t in recorder.calls] == first_steps
    noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), first_steps[0], dtype=torch.long)
    torch.testing.assert_close(recorder.calls[0][0], schedule.add_noise(start, noise, t))


def test_start_of_another_shape_is_rejected(schedule):
    with pytest.raises(InputError, match="start"):
        run(Recorder(schedule, images(3)), schedule, images(2), start=images(1)[:1], start_t0=0.5)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_res_blocks=1, image_size=16)
    for module in model.modules():  # untrained but not zero-initialised, so its output has structure
        if isinstance(module, nn.Conv2d) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.1)
    return model.eval()


def mean_lmi(source: torch.Tensor, image: torch.Tensor) -> float:
    return local_mutual_information(to_unit(source), to_unit(image), **LMI).mean().item()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_lmi_gradient_guidance_raises_lmi_with_the_source(unet, schedule, sampler):
    source = images(2)
    plain = run(unet, schedule, source, sampler=sampler)
    guided = run(unet, schedule, source, sampler=sampler, lmi_gradient_scale=0.2)
    assert plain.lmi_calls + (20 if sampler == "ddpm" else 5) == guided.lmi_calls
    assert guided.images.min() >= -1 and guided.images.max() <= 1
    assert mean_lmi(source, guided.images) > mean_lmi(source, plain.images) + 0.01  # measured +0.019 .. +0.033


def test_lmi_gradient_guidance_is_off_at_scale_zero_and_unguided(unet, schedule):
    source = images(2)
    assert torch.equal(run(unet, schedule, source).images, run(unet, schedule, source, lmi_gradient_scale=0.0).images)
    config = SamplingConfig(steps=3, eta=0.0, lmi_gradient_scale=0.5)
    unguided = [sample(unet, schedule, source, config, guided=False, progress=False,
                       generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert unguided[0].lmi_calls == 0 and torch.equal(unguided[0].images, unguided[1].images)


@pytest.mark.parametrize("values, key", [
    ({"start": "histmatch"}, "start"),
    ({"start_t0": 1.5}, "start_t0"),
    ({"lmi_gradient_scale": -0.1}, "lmi_gradient_scale"),
])
def test_config_rejects_bad_lever_values(values, key):
    with pytest.raises(InputError, match=f"sampling\\.{key}"):
        SamplingConfig.from_dict(values)
    with pytest.raises(jsonschema.ValidationError):  # the workflow's schema validation
        jsonschema.validate(values, schema()["properties"]["sampling"])


def test_the_default_starts_from_atlas_match_and_the_paper_config_from_noise():
    """The default start assumes no direction of the source's map (docs/results.md); paper.yaml keeps the
    levers off."""
    default = SamplingConfig()
    assert (default.start, default.guidance_scale, default.lmi_gradient_scale) == ("atlas_match", 1.0, 0)
    assert default.detail_radius == 1  # the detail transfer, docs/history.md "Detail transfer"
    paper = SamplingConfig(**yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["sampling"])
    assert (paper.start, paper.guidance_scale, paper.lmi_gradient_scale, paper.detail_radius) == ("noise", 1.0, 0, 0)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """A tiny model file, a brain mask and a source on a 12 x 12 x 3 grid."""
    root = tmp_path_factory.mktemp("levers")
    config = DiffusionConfig(image_size=16, base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,),
                             num_res_blocks=1, timesteps=10, lmi_bins=4, lmi_sigma=0.15)
    torch.manual_seed(0)
    save_model(build_model(config), config, root / "model.pt")
    mask = np.zeros((12, 12, 3), np.uint8)
    mask[3:9, 3:9] = 1
    source = np.where(mask, np.random.default_rng(0).uniform(-0.5, 0.5, mask.shape), -1).astype(np.float32)
    save_volume(root / "mask.nii.gz", mask, np.eye(4), dtype=np.uint8)
    save_volume(root / "source.nii.gz", source, np.eye(4))
    save_volume(root / "start.nii.gz", -source, np.eye(4))
    save_volume(root / "start_wrong.nii.gz", -source[:10], np.eye(4))
    return root


def translate(root, start_file, **settings):
    config = SamplingConfig(**{"steps": 2, "eta": 0.0, "guidance_scale": 1.0, "batch_size": 4} | settings)
    return translate_volume(root / "model.pt", root / "mask.nii.gz", root / "out.nii.gz",
                            source_path=root / "source.nii.gz", start_path=start_file and root / start_file,
                            config=config, device="cpu")


def test_translate_volume_checks_the_start_image(volumes):
    with pytest.raises(InputError, match="start_wrong.nii.gz: shape"):
        translate(volumes, "start_wrong.nii.gz", start="invert")
    with pytest.raises(InputError, match=r"sampling\.start: atlas_map"):
        translate(volumes, None, start="atlas_map")
    assert translate(volumes, "start.nii.gz", start="invert", start_t0=0.3).exists()


def test_translate_cli_takes_a_start_path():
    args = cli.build_parser().parse_args(["translate", "--model", "m", "--mask", "k", "--out", "o",
                                          "--start", "s.nii.gz"])
    assert str(args.start) == "s.nii.gz"


def test_detail_transfer_puts_the_sources_detail_back(volumes):
    """At t0 = 0 the translation is the negated source through the slice grid, blurred; the local fit on
    the source through the same grid (midiffusion.diffusion.detail) returns the negated source at full resolution."""
    source = load_volume(volumes / "source.nii.gz").data
    mask = load_volume(volumes / "mask.nii.gz").data > 0
    blurred, detailed = (
        load_volume(translate(volumes, "start.nii.gz", start="invert", start_t0=0.0, **detail)).data
        for detail in ({"detail_radius": 0}, {"detail_radius": 1, "detail_eps": 1e-6}))
    assert np.abs(blurred + source)[mask].max() > 0.05
    assert np.abs(detailed + source)[mask].max() < 1e-3
