"""The project's nnU-Net trainers.

This folder is what `nnUNet_extTrainer` points to (set per call by `midiffusion.segment`), so
`nnUNetv2_train -tr NAME` and `nnUNetv2_predict -tr NAME` find the classes through nnU-Net's own
trainer lookup. nnU-Net imports the modules here as top-level modules, so they use absolute imports
only and their names are distinctive (nnU-Net's convention: the module is named for its trainers).
This file is not one of them: it imports nothing of nnU-Net.
"""

TRAINER_PREFIX = "nnUNetTrainer"
# the recipes of the contrast-agnostic rivals: nnU-Net's heavy augmentation, and domain randomisation
RIVAL_RECIPES = ("DA5", "DomainRand")


def rival_trainers(target: str) -> list[str]:
    """The rivals of target trainer nnUNetTrainer<SUFFIX>: nnUNetTrainer<RECIPE><SUFFIX>, one per recipe.

    A rival keeps the target's schedule (the suffix), so it trains on the same budget:
    nnUNetTrainer_midiffusion_quick -> nnUNetTrainerDA5_midiffusion_quick, nnUNetTrainerDomainRand_midiffusion_quick.
    """
    if not target.startswith(TRAINER_PREFIX):
        raise ValueError(f"trainer {target!r}: expected a name nnUNetTrainer<SUFFIX>")
    suffix = target.removeprefix(TRAINER_PREFIX)
    return [f"{TRAINER_PREFIX}{recipe}{suffix}" for recipe in RIVAL_RECIPES]
