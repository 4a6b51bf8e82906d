"""The project's nnU-Net trainers: schedules, the contrast-agnostic rivals, domain randomisation, lookup."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

from midiffusion.nnunet_trainers import nnUNetTrainer_midiffusion as short
from midiffusion.nnunet_trainers.nnUNetTrainerDomainRand import LabelsToImageTransform, nnUNetTrainerDomainRand
from midiffusion.methods import trainer_name
from midiffusion.segment import TRAINERS_DIR

TARGETS = [
    "nnUNetTrainer",
    "nnUNetTrainer_midiffusion_ci",
    "nnUNetTrainer_midiffusion_quick",
    "nnUNetTrainer_midiffusion_long",
    "nnUNetTrainer_midiffusion_verylong",
]
RIVALS = ["strong_aug", "domain_rand"]  # the segmenters whose trainers the workflow names from the target's
NEW_TRAINERS = [
    "nnUNetTrainerDA5_midiffusion_ci",
    "nnUNetTrainerDA5_midiffusion_quick",
    "nnUNetTrainerDA5_midiffusion_long",
    "nnUNetTrainerDA5_midiffusion_verylong",
    "nnUNetTrainerDomainRand",
    "nnUNetTrainerDomainRand_midiffusion_ci",
    "nnUNetTrainerDomainRand_midiffusion_quick",
    "nnUNetTrainerDomainRand_midiffusion_long",
    "nnUNetTrainerDomainRand_midiffusion_verylong",
]


def _schedule(trainer: type) -> tuple:
    return trainer.epochs, trainer.iterations, trainer.val_iterations, trainer.max_batch_size


def _labels(shape: tuple[int, ...]) -> torch.Tensor:
    """(1, *shape) int16: nested ellipsoids WM (3) in GM (2) in CSF (1) on background (0), and a
    border of -1 (nnU-Net's padding) on the first axis."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    labels = np.select([radius < 0.35, radius < 0.6, radius < 0.8], [3, 2, 1], 0)
    labels[:3] = -1
    return torch.from_numpy(labels[None].astype(np.int16))


@pytest.mark.parametrize("shape, spacing", [((64, 56), (2.0, 2.0, 2.0)), ((24, 28, 20), (1.0, 1.0, 1.5))])
def test_domain_randomisation_draws_tissues_in_any_order_and_keeps_the_labels(shape, spacing):
    labels = _labels(shape)
    valid = labels[0] >= 0
    transform = LabelsToImageTransform(spacing)
    rankings = set()
    for seed in range(20):
        np.random.seed(seed)  # the transform's randomness comes from numpy's RNG (nnU-Net reseeds it per worker)
        out = transform(image=torch.zeros((1, *shape)), segmentation=labels.clone())
        assert torch.equal(out["segmentation"], labels)
        image = out["image"]
        assert image.shape == (1, *shape) and image.dtype == torch.float32 and torch.isfinite(image).all()
        inside = image[0][valid]
        assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std()) - 1) < 1e-3
        assert torch.all(image[0][~valid] == 0)  # outside the image: nnU-Net's padding value
        means = [float(image[0][labels[0] == k].mean()) for k in range(4)]
        rankings.add(tuple(np.argsort(means)))
    # bright and dark tissues swap from draw to draw (24 orders of 4 classes; ~13 expected in 20 draws)
    assert len(rankings) >= 5


def test_domain_randomisation_draws_differ_and_repeat_with_the_seed():
    labels = _labels((32, 32))
    transform = LabelsToImageTransform((2.0, 2.0))
    images = []
    for seed in (0, 1, 0):
        np.random.seed(seed)
        images.append(transform(image=torch.zeros((1, 32, 32)), segmentation=labels)["image"])
    assert torch.equal(images[0], images[2]) and not torch.allclose(images[0], images[1])


def test_domain_rand_synthesises_first_then_runs_nnunets_own_augmentation():
    trainer = nnUNetTrainerDomainRand.__new__(nnUNetTrainerDomainRand)  # no plan needed: only the spacing is read
    trainer.configuration_manager = SimpleNamespace(spacing=[2.0, 2.0])
    pipeline = trainer.get_training_transforms(np.array((48, 40)), (-np.pi, np.pi), None, (0, 1), False)
    own = nnUNetTrainer.get_training_transforms(np.array((48, 40)), (-np.pi, np.pi), None, (0, 1), False)
    assert isinstance(pipeline.transforms[0], LabelsToImageTransform)
    assert [type(t) for t in pipeline.transforms[1:]] == [type(t) for t in own.transforms]
    assert isinstance(pipeline.transforms[1], SpatialTransform)
    # the validation pipeline is nnU-Net's: validation batches are real images
    assert nnUNetTrainerDomainRand.get_validation_transforms is nnUNetTrainer.get_validation_transforms

    out = pipeline(image=torch.randn((1, 64, 56)), segmentation=_labels((64, 56)))
    assert out["image"].shape == (1, 48, 40) and torch.isfinite(out["image"]).all()
    assert set(out["segmentation"].unique().tolist()) <= {0, 1, 2, 3}


def test_the_short_schedules_keep_their_numbers():
    assert _schedule(short.nnUNetTrainer_midiffusion_ci) == (2, 4, 2, None)
    assert _schedule(short.nnUNetTrainer_midiffusion_quick) == (20, 15, 2, 8)
    assert _schedule(short.nnUNetTrainer_midiffusion_long) == (100, 15, 2, 8)
    assert _schedule(short.nnUNetTrainer_midiffusion_verylong) == (300, 15, 2, 8)


@pytest.mark.parametrize("target", TARGETS)
def test_rivals_have_the_target_trainers_schedule(target):
    da5, domain_rand = (trainer_name(rival, target) for rival in RIVALS)
    if target == "nnUNetTrainer":
        # nnU-Net's 1000 x 250: neither rival touches the constructor that sets it
        assert (da5, domain_rand) == ("nnUNetTrainerDA5", "nnUNetTrainerDomainRand")
        assert nnUNetTrainerDA5.__init__ is nnUNetTrainerDomainRand.__init__ is nnUNetTrainer.__init__
        return
    target_class, da5_class, domain_rand_class = (getattr(short, name) for name in (target, da5, domain_rand))
    assert _schedule(da5_class) == _schedule(domain_rand_class) == _schedule(target_class)
    assert issubclass(da5_class, nnUNetTrainerDA5) and issubclass(domain_rand_class, nnUNetTrainerDomainRand)
    # DA5 is taken for the schedule only: its augmentation is nnU-Net's
    for hook in ("get_training_transforms", "configure_rotation_dummyDA_mirroring_and_inital_patch_size"):
        assert getattr(da5_class, hook) is getattr(nnUNetTrainerDA5, hook)


def test_nnunet_lookup_finds_every_new_trainer_and_rival(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    # how nnUNetv2_train and nnUNetv2_predict resolve -tr NAME; monkeypatch restores the variable
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
    rivals = [trainer_name(rival, target) for target in TARGETS for rival in RIVALS]
    assert sorted(set(rivals) - {"nnUNetTrainerDA5"}) == sorted(NEW_TRAINERS)
    for name in NEW_TRAINERS + ["nnUNetTrainerDA5"]:
        found = recursive_find_trainer_class_by_name(name)
        assert found.__name__ == name and issubclass(found, nnUNetTrainer)
    assert recursive_find_trainer_class_by_name("nnUNetTrainerDA5") is nnUNetTrainerDA5
