"""midiffusion: zero-shot cross-modality MRI translation with mutual-information-guided diffusion."""

__version__ = "0.1.0"
