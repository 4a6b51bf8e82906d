"""Short nnU-Net trainers: a recipe (nnU-Net's standard one, DA5, domain randomisation) on a short schedule.

A schedule is a mixin that any trainer takes, listed first: `class X(QuickSchedule, nnUNetTrainerDA5)`.
Like nnU-Net's own `nnUNetTrainer_5epochs` it sets the training length in the constructor (and skips
the pointless final validation of fold "all"); everything else (network, loss, augmentation) is the
recipe's. Names follow nnU-Net's `nnUNetTrainer<RECIPE><SCHEDULE>`: the rivals of a target trainer
`nnUNetTrainer<SUFFIX>` are `nnUNetTrainerDA5<SUFFIX>` and `nnUNetTrainerDomainRand<SUFFIX>`
(`midiffusion.methods.trainer_name`), so they get the target's budget by name. nnU-Net names the results folder after the class, so a trained
model says how it was trained.
"""

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

from midiffusion.nnunet_trainers.nnUNetTrainerDomainRand import nnUNetTrainerDomainRand
from midiffusion.segment import SEED_VARIABLE


class ShortSchedule:
    """Mixin for an nnUNetTrainer: `epochs` epochs of `iterations` training and `val_iterations`
    validation batches, and batches of at most `max_batch_size` patches (None: the plan's); seeded
    when segment.train passes a seed (SEED_VARIABLE)."""

    epochs: int
    iterations: int
    val_iterations: int
    max_batch_size: int | None = None

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        # the same parameter names as nnUNetTrainer's: it records them by name for its checkpoints
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.epochs
        self.num_iterations_per_epoch = self.iterations
        self.num_val_iterations_per_epoch = self.val_iterations
        self.save_every = 5  # checkpoint_latest.pth: an interrupted training resumes there (segment.train)
        if (value := os.environ.get(SEED_VARIABLE)) is not None:
            seed = int(value)
            # every generator the training draws from: network initialisation, batch sampling, augmentation
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            self.print_to_log_file(f"Seed {seed}")

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if self.max_batch_size is not None:
            self.batch_size = min(self.batch_size, self.max_batch_size)

    def perform_actual_validation(self, save_probabilities: bool = False):
        # With fold "all" nnU-Net's final "validation" predicts the training cases themselves: it
        # measures nothing and, on a CPU, can outlast a short training. A real fold (0-4) is validated.
        if self.fold == "all":
            self.print_to_log_file("Final validation skipped: fold 'all' has no held-out cases.")
            return
        super().perform_actual_validation(save_probabilities)


class CISchedule(ShortSchedule):
    """CI: proves the real train/predict path works, not that the model is any good (2 x 4 batches), on the
    plan's network with a quarter of its features per stage: a CPU spends nnU-Net's prediction almost
    all in convolutions, sixteen times fewer here. Prediction builds the network through the trainer too."""

    epochs = 2
    iterations = 4
    val_iterations = 2
    feature_divisor = 4

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs["features_per_stage"] = [max(f // cls.feature_divisor, 4) for f in kwargs["features_per_stage"]]
        return get_network_from_plans(
            configuration_manager.network_arch_class_name, kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, num_input_channels, num_output_channels,
            allow_init=True, deep_supervision=enable_deep_supervision,
        )


class QuickSchedule(ShortSchedule):
    """Quick default for the embedded phantom on a CPU: 20 epochs of 15 batches of 8 patches.

    nnU-Net plans batches of 27 patches of 96 x 80 for the 2 mm phantom's brain box: batches of 8 take
    7.8-10.7 s an epoch on a 2-core CPU, so this is ~3.6 minutes there (docs/hardware.md).
    """

    epochs = 20
    iterations = 15
    val_iterations = 2
    max_batch_size = 8


class LongSchedule(QuickSchedule):
    """Five times the quick schedule: 100 epochs of 15 batches of 8 (about an hour on a 2-core CPU:
    experiments/rivals_long.yaml has the measured epoch time).

    For recipes that learn slowly, domain randomisation above all: it shows what a longer budget buys.
    """

    epochs = 100


class VeryLongSchedule(QuickSchedule):
    """Fifteen times the quick schedule: 300 epochs of 15 batches of 8 (about 75 minutes on a 2-core CPU).

    For domain randomisation, still climbing at the end of the long one: with `nnunet.rival_schedule`
    the rivals take it while the target nnU-Net keeps its own (experiments/domain_rand_plateau.yaml).
    """

    epochs = 300


class nnUNetTrainer_midiffusion_ci(CISchedule, nnUNetTrainer):
    """nnU-Net's standard recipe on the CI schedule."""


class nnUNetTrainer_midiffusion_quick(QuickSchedule, nnUNetTrainer):
    """nnU-Net's standard recipe on the quick schedule."""


class nnUNetTrainer_midiffusion_long(LongSchedule, nnUNetTrainer):
    """nnU-Net's standard recipe on the long schedule."""


class nnUNetTrainer_midiffusion_verylong(VeryLongSchedule, nnUNetTrainer):
    """nnU-Net's standard recipe on the very long schedule."""


# DA5 (nnU-Net's heavy augmentation) is taken as it is: only the schedule changes.
class nnUNetTrainerDA5_midiffusion_ci(CISchedule, nnUNetTrainerDA5):
    """nnU-Net's DA5 recipe on the CI schedule."""


class nnUNetTrainerDA5_midiffusion_quick(QuickSchedule, nnUNetTrainerDA5):
    """nnU-Net's DA5 recipe on the quick schedule."""


class nnUNetTrainerDA5_midiffusion_long(LongSchedule, nnUNetTrainerDA5):
    """nnU-Net's DA5 recipe on the long schedule."""


class nnUNetTrainerDA5_midiffusion_verylong(VeryLongSchedule, nnUNetTrainerDA5):
    """nnU-Net's DA5 recipe on the very long schedule."""


class nnUNetTrainerDomainRand_midiffusion_ci(CISchedule, nnUNetTrainerDomainRand):
    """SynthSeg-style domain randomisation on the CI schedule."""


class nnUNetTrainerDomainRand_midiffusion_quick(QuickSchedule, nnUNetTrainerDomainRand):
    """SynthSeg-style domain randomisation on the quick schedule."""


class nnUNetTrainerDomainRand_midiffusion_long(LongSchedule, nnUNetTrainerDomainRand):
    """SynthSeg-style domain randomisation on the long schedule."""


class nnUNetTrainerDomainRand_midiffusion_verylong(VeryLongSchedule, nnUNetTrainerDomainRand):
    """SynthSeg-style domain randomisation on the very long schedule."""
