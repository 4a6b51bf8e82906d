"""Short nnU-Net trainers: the standard recipe, only fewer and shorter epochs.

Like nnU-Net's own `nnUNetTrainer_5epochs`, each variant overrides one hook (the constructor) to
set the training length; everything else (network, loss, augmentation, schedule) is nnU-Net's. The
length is in the class name's meaning and in the results folder nnU-Net names after the class, so
a trained model says how long it was trained.
"""

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class _ShortTrainer(nnUNetTrainer):
    """nnUNetTrainer with `epochs` epochs of `iterations` training and `val_iterations` validation batches."""

    epochs = 1000
    iterations = 250
    val_iterations = 50

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.epochs
        self.num_iterations_per_epoch = self.iterations
        self.num_val_iterations_per_epoch = self.val_iterations


class nnUNetTrainer_midiffusion_ci(_ShortTrainer):
    """CI: proves the real train/predict path works, not that the model is any good (2 x 4 batches)."""

    epochs = 2
    iterations = 4
    val_iterations = 2


class nnUNetTrainer_midiffusion_quick(_ShortTrainer):
    """Quick default for the embedded phantom on a CPU: 50 epochs of 50 batches (1/100 of the standard 1000 x 250)."""

    epochs = 50
    iterations = 50
    val_iterations = 10
