"""tools/studies/start_choice.py: a start chosen by the target model's denoising loss, without labels."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import load_script
from midiffusion.diffusion.model import LoadedModel
from midiffusion.diffusion.schedule import DDPMSchedule

TISSUES = torch.tensor([-0.6, 0.2, 0.8])  # the toy target contrast's three tissue intensities


@pytest.fixture(scope="module")
def choice():
    return load_script("tools/studies/start_choice.py")


class TissueDenoiser(torch.nn.Module):
    """The best noise prediction for target images whose pixels are any of TISSUES (equally likely,
    independent): it knows the target's intensities, not any anatomy or label."""

    def __init__(self, schedule: DDPMSchedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        assert cond is None  # scored in the model's unconditional mode
        alpha_bar = self.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        distance = (x_t[..., None] - alpha_bar.sqrt()[..., None] * TISSUES) ** 2
        weights = torch.softmax(-distance / (2 * (1 - alpha_bar[..., None])), dim=-1)
        return self.schedule.predict_eps((weights * TISSUES).sum(-1), t, x_t)


@pytest.mark.parametrize("direction, expected", [(1.0, "none"), (-1.0, "invert")])
def test_the_model_chooses_the_negated_map_of_an_inverted_source_and_the_source_itself_of_a_plain_one(
        choice, direction, expected):
    schedule = DDPMSchedule(timesteps=100)
    loaded = LoadedModel(TissueDenoiser(schedule), schedule, config=None)
    labels = np.random.default_rng(0).integers(0, 3, size=(6, 1, 16, 16))
    source = direction * TISSUES.numpy()[labels]  # the target's tissues, in the same or the reverse order
    losses = {"none": choice.denoising_loss(loaded, source, t=20), "invert": choice.denoising_loss(loaded, -source, t=20)}
    assert choice.choose(losses) == expected
    assert min(losses.values()) < 0.5 * max(losses.values())


def test_the_same_slices_get_the_same_loss_and_the_loss_grows_with_the_distance(choice):
    schedule = DDPMSchedule(timesteps=100)
    loaded = LoadedModel(TissueDenoiser(schedule), schedule, config=None)
    target = TISSUES.numpy()[np.random.default_rng(1).integers(0, 3, size=(4, 1, 8, 8))]
    assert choice.denoising_loss(loaded, target, t=30) == choice.denoising_loss(loaded, target, t=30)
    losses = [choice.denoising_loss(loaded, target + shift, t=30) for shift in (0.0, 0.1, 0.3)]
    assert losses == sorted(losses) and losses[0] < losses[-1]


def test_choices_look_up_the_chosen_starts_translation(choice):
    losses = pd.DataFrame([
        {"subject": "sub-08", "source": "FLAIR", "candidate": c, "t": 99, "loss": loss}
        for c, loss in (("invert", 0.3), ("none", 0.2), ("atlas_map", 0.1), ("atlas_match", 0.15))
    ] + [
        {"subject": "sub-08", "source": "T2w", "candidate": c, "t": 99, "loss": loss}
        for c, loss in (("invert", 0.3), ("none", 0.1), ("atlas_map", 0.4), ("atlas_match", 0.35))
    ])
    levers = pd.DataFrame([
        {"variant": variant, "anatomy": "icbm152_2009a", "subject": "sub-08", "source": source, "dice": dice, "corr": 0.5}
        for variant, source, dice in (("midiffusion", "FLAIR", 0.66), ("start_atlas_map_t0.1+detail_r1", "FLAIR", 0.68),
                                      ("midiffusion", "T2w", 0.73))
    ])
    table = choice.choices(losses, levers).set_index(["among", "source"])
    assert table.loc[("all maps", "FLAIR"), "chosen"] == "atlas_map" and table.loc[("all maps", "FLAIR"), "dice"] == 0.68
    assert table.loc[("all maps", "FLAIR"), "default dice"] == 0.66
    assert table.loc[("direction", "FLAIR"), "chosen"] == "none"  # of invert and none only
    assert table.loc[("all maps", "T2w"), "chosen"] == "none" and np.isnan(table.loc[("all maps", "T2w"), "dice"])
    assert "atlas_map 1" in choice.markdown(choice.choices(losses, levers))
