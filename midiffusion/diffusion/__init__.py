"""The diffusion stage: everything that trains the model and translates with it, all of it torch.

slices.py cuts volumes into the model's axial slices and back, and stacks the training set; unet.py is
the network and schedule.py the noise schedule with its reverse steps; lmi.py computes the local mutual
information that conditions and guides it; sampling.py is the sampling loop; model.py builds, saves and
loads model.pt; train.py is the training loop; translate.py translates a volume (detail.py puts the
source's fine detail back); benchmark.py times the sampler's settings against each other. The
workflow's rules slices, train_diffusion, translate and benchmark_sampling run these modules
(workflow/rules/diffusion.smk, methods.smk); docs/method.md describes the method.
"""
