"""The project's nnU-Net trainers.

This folder is what `nnUNet_extTrainer` points to (set per call by `midiffusion.segment`), so
`nnUNetv2_train -tr NAME` and `nnUNetv2_predict -tr NAME` find the classes through nnU-Net's own
trainer lookup. nnU-Net imports the modules here as top-level modules, so they use absolute imports
only and their names are distinctive (nnU-Net's convention: the module is named for its trainers).
"""
