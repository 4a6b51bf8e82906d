"""Training the LMI-conditioned epsilon-prediction UNet on target-contrast slices (docs/method.md,
"Training").

Outputs in out_dir: checkpoint.pt (model, EMA, optimizer, step, losses, config, RNG state; training
resumes from it), model.pt (EMA weights + config: what sampling loads, see model.py), loss.csv and
loss.png.
"""

from __future__ import annotations

import copy
import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import DiffusionConfig
from ..intensity import reference_quantiles
from ..io import InputError, atomic_path
from .lmi import lmi_condition, local_mutual_information, to_unit
from .model import MODEL_FILE, build_model, build_schedule, save_model, select_device
from .schedule import DDPMSchedule
from .unet import UNet

CHECKPOINT = "checkpoint.pt"
# Keys that may change between a checkpoint and the run that resumes it (the rest define the run).
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "device", "mixed_precision", "cpu_bfloat16"}
# Slices per batch when caching the self-LMI at start (bounds LMI memory, see lmi.py).
_SELF_LMI_BATCH = 16


@dataclass
class TrainResult:
    """What a train() call produced; seconds_per_step is None when it had no step left to run."""

    model_path: Path
    checkpoint_path: Path
    loss_csv: Path
    loss_plot: Path
    start_step: int
    end_step: int
    seconds_per_step: float | None


def load_slices(path: Path, image_size: int) -> torch.Tensor:
    """The training slices: `images` (N, 1, S, S) in [-1, 1] from an .npz -> float32 tensor."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with np.load(path) as archive:
        if "images" not in archive:
            raise InputError(f"{path}: no array 'images' (found {sorted(archive.files)})")
        images = archive["images"]
    expected = f"(N, 1, {image_size}, {image_size})"
    if images.ndim != 4 or images.shape[1:] != (1, image_size, image_size) or len(images) == 0:
        raise InputError(f"{path}: images have shape {images.shape}, expected {expected} (config image_size)")
    if not np.issubdtype(images.dtype, np.floating):
        raise InputError(f"{path}: images have dtype {images.dtype}, expected float16 or float32")
    images = images.astype(np.float32)
    if not np.isfinite(images).all() or np.abs(images).max() > 1 + 1e-3:
        raise InputError(f"{path}: images must be finite and in [-1, 1]")
    return torch.from_numpy(images).clamp_(-1, 1)


def target_quantiles(path: Path, slices: torch.Tensor) -> np.ndarray:
    """The training targets' brain quantiles (intensity.reference_quantiles) that model.pt keeps: those the
    slices file carries (computed from the volumes, as the workflow's rank maps compute them), else those of
    the slices' brain pixels (above the background -1; the grid's interpolation blends a few at the edge)."""
    with np.load(path) as archive:
        if "target_quantiles" in archive:
            return archive["target_quantiles"]
    return reference_quantiles([slices[slices > -1 + 1e-3].numpy()])


@torch.no_grad()
def self_lmi_cache(images: torch.Tensor, config: DiffusionConfig) -> torch.Tensor:
    """LMI(x0, x0) of every training slice, fixed for the whole run: (N, 1, S, S) -> (N, 1, S, S)."""
    unit = to_unit(images)
    batches = unit.split(_SELF_LMI_BATCH)
    return torch.cat([local_mutual_information(batch, batch, **config.lmi_kwargs()) for batch in batches])


@dataclass
class _Run:
    """Everything a training step touches; checkpointed and restored as a whole."""

    model: UNet
    ema: UNet
    optimizer: torch.optim.Optimizer
    schedule: DDPMSchedule
    generator: torch.Generator
    losses: list[float]
    step: int = 0


def _new_run(config: DiffusionConfig, device: torch.device) -> _Run:
    torch.manual_seed(config.seed)  # model initialisation and dropout
    model = build_model(config).to(device)
    return _Run(
        model=model,
        ema=copy.deepcopy(model).requires_grad_(False),
        optimizer=torch.optim.Adam(model.parameters(), lr=config.lr),
        schedule=build_schedule(config).to(device),
        generator=torch.Generator(device).manual_seed(config.seed),  # batches, t, noise, dropout masks
        losses=[],
    )


def _train_step(run: _Run, images: torch.Tensor, self_lmi: torch.Tensor, config: DiffusionConfig) -> float:
    """One Adam step on a random batch; returns the epsilon-prediction MSE."""
    device, gen = images.device, run.generator
    index = torch.randint(len(images), (config.batch_size,), generator=gen, device=device)
    x0, x0_self_lmi = images[index], self_lmi[index]
    if config.random_flip:  # left-right; LMI commutes with the flip, so the cached self-LMI flips too
        flip = (torch.rand(config.batch_size, generator=gen, device=device) < 0.5).view(-1, 1, 1, 1)
        x0, x0_self_lmi = torch.where(flip, x0.flip(-1), x0), torch.where(flip, x0_self_lmi.flip(-1), x0_self_lmi)
    t = torch.randint(run.schedule.timesteps, (config.batch_size,), generator=gen, device=device)
    noise = torch.randn(x0.shape, generator=gen, device=device)
    x_t = run.schedule.add_noise(x0, noise, t)
    anchor, anchor_self_lmi = _anchors(x0, x0_self_lmi, config, gen)
    cond = training_condition(anchor, anchor_self_lmi, x0, x_t, noise, t, run.schedule, config)
    # Condition dropout: zeros = "no condition", so one model serves unguided and guided sampling.
    dropped = torch.rand(config.batch_size, generator=gen, device=device) < config.cond_dropout
    cond = torch.where(dropped.view(-1, 1, 1, 1), torch.zeros_like(cond), cond)
    eps = run.model(x_t, t, cond)
    squared_error = (eps.float() - noise).pow(2).mean(dim=(1, 2, 3))
    loss = (squared_error * _loss_weights(run.schedule, t, config.min_snr_gamma)).mean()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    _update_ema(run, config.ema_decay, config.ema_warmup)
    return squared_error.mean().item()  # unweighted, so loss curves compare across weightings


def training_condition(
    anchor: torch.Tensor,
    anchor_self_lmi: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    schedule: DDPMSchedule,
    config: DiffusionConfig,
) -> torch.Tensor:
    """The condition [LMI(anchor, x_paired), LMI(anchor, anchor)] of a training batch, (N, 2, H, W).

    anchor: the clean image in [0, 1] (or its contrast-augmented version); x_paired is x_t, the
    network's input, as at sampling time where the anchor is the source and x_t the sample
    (pairing "x_t"), or x_{t+1} = q_sample(x0, t + 1) with the same noise (pairing "x_t_plus_1",
    the paper's code; docs/method.md, "Training").
    """
    if config.pairing == "x_t_plus_1":
        x_t = schedule.add_noise(x0, noise, (t + 1).clamp(max=schedule.timesteps - 1))
    return lmi_condition(anchor, to_unit(x_t), self_lmi=anchor_self_lmi, **config.lmi_kwargs())


def _anchors(
    x0: torch.Tensor, self_lmi: torch.Tensor, config: DiffusionConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LMI anchors of a batch (in [0, 1]) and their self-LMI: x0 itself, or for a random share
    anchor_contrast_p of the batch x0 under a random intensity curve (see random_contrast)."""
    anchor = to_unit(x0)
    if config.anchor_contrast_p == 0:
        return anchor, self_lmi
    remap = torch.rand(len(x0), generator=generator, device=x0.device) < config.anchor_contrast_p
    if not remap.any():
        return anchor, self_lmi
    remapped = random_contrast(anchor[remap], config.anchor_contrast_knots, generator)
    anchor, self_lmi = anchor.clone(), self_lmi.clone()
    anchor[remap] = remapped
    self_lmi[remap] = local_mutual_information(remapped, remapped, **config.lmi_kwargs())
    return anchor, self_lmi


def random_contrast(unit: torch.Tensor, knots: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image under its own random piecewise-linear intensity curve; background (0) stays 0.

    unit: (N, 1, H, W) in [0, 1]. The curve takes `knots` uniform random values at evenly spaced
    intensities, stretched to span [0, 1] like a normalised scan. MI ignores how intensities are
    labelled, but the LMI estimate near the background and across tissues does not: trained on
    its own contrast only, the model learns T1w's LMI pattern (dark CSF next to dark background)
    and follows an inverted T1w anchor no better than a T2w one. Random curves (monotone or not)
    make it read the anchor's structure instead; the training images are still target-only.
    """
    n = len(unit)
    values = torch.rand(n, knots, generator=generator, device=unit.device)
    low, high = values.aminmax(dim=1, keepdim=True)
    values = ((values - low) / (high - low).clamp_min(1e-6)).view(n, knots, 1, 1).expand(-1, -1, *unit.shape[2:])
    position = unit * (knots - 1)
    left = position.floor().clamp(max=knots - 2).long()
    fraction = position - left
    curve = values.gather(1, left).lerp(values.gather(1, left + 1), fraction)
    return torch.where(unit > 0, curve, torch.zeros_like(unit))


def _loss_weights(schedule: DDPMSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights: min(SNR_t, gamma) / SNR_t (Min-SNR-gamma, Hang et al. 2023, for epsilon
    prediction: less weight on the nearly clean steps, which converge slowly and matter little); ones
    when gamma is 0."""
    if gamma <= 0:
        return torch.ones(t.shape, device=t.device)
    snr = schedule.alpha_bar[t] / (1 - schedule.alpha_bar[t])
    return snr.clamp(max=gamma) / snr


@torch.no_grad()
def _update_ema(run: _Run, decay: float, warmup: bool) -> None:
    # Warm-up (as tf.train.ExponentialMovingAverage with num_updates): with 0.9999 from step 0 the
    # EMA would still be mostly the random initialisation after the few thousand CPU-scale steps.
    if warmup:
        decay = min(decay, (1 + run.step) / (10 + run.step))
    for averaged, current in zip(run.ema.parameters(), run.model.parameters()):
        averaged.lerp_(current, 1 - decay)


def _save_checkpoint(run: _Run, config: DiffusionConfig, path: Path) -> None:
    state = {
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "losses": torch.tensor(run.losses, dtype=torch.float64),
        "config": config.to_dict(),
        "rng": {"generator": run.generator.get_state(), "torch": torch.get_rng_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _restore_checkpoint(run: _Run, config: DiffusionConfig, path: Path) -> None:
    state = torch.load(path, map_location=run.schedule.betas.device, weights_only=True)
    # Keys added since a checkpoint was written count as their defaults.
    saved, current = {**DiffusionConfig().to_dict(), **state["config"]}, config.to_dict()
    changed = sorted(key for key in current.keys() - _RESUMABLE_CHANGES if saved[key] != current[key])
    if changed:
        raise InputError(
            f"{path}: checkpoint was trained with different {changed}; use a new output directory or remove it"
        )
    run.model.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.step = state["step"]
    run.losses = state["losses"].tolist()
    generator_state = state["rng"]["generator"].cpu()
    if generator_state.numel() == run.generator.get_state().numel():
        run.generator.set_state(generator_state)
    else:
        # The run moved between CPU and GPU, whose generator states differ in kind: go on with a
        # fresh stream seeded from the step. The run is valid, just not bit-identical to staying put.
        run.generator.manual_seed(config.seed + run.step)
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])


def _write_losses(losses: list[float], csv_path: Path, plot_path: Path) -> None:
    """loss.csv (step, loss; steps from 1) and loss.png (per-step loss and its running mean)."""
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows((step, f"{loss:.6g}") for step, loss in enumerate(losses, start=1))
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 50)
    axes.plot(steps, losses, color="0.75", linewidth=0.5, label="per step")
    if len(losses) >= window:
        running = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1 :], running, color="C0", label=f"mean of {window}")
    axes.set(xlabel="step", ylabel="epsilon MSE", yscale="log", title="diffusion training loss")
    axes.legend()
    figure.tight_layout()
    with atomic_path(plot_path) as tmp:
        figure.savefig(tmp, dpi=100)


def train(slices_path: Path, out_dir: Path, config: DiffusionConfig, *, progress: bool = True) -> TrainResult:
    """Train (or resume from out_dir/checkpoint.pt) up to config.steps optimizer steps.

    slices_path: .npz with `images` (N, 1, S, S), S = config.image_size, in [-1, 1] (background -1).
    A checkpoint is written every config.checkpoint_every steps and at the end; a resumed run
    continues from the checkpoint's step with its optimizer, EMA, losses and RNG state, so a run
    killed mid-way loses at most checkpoint_every steps. If the checkpoint already has
    config.steps or more, nothing is trained and the outputs are written from it.
    """
    out_dir = Path(out_dir)
    device = select_device(config.device)
    slices = load_slices(slices_path, config.image_size)
    images = slices.to(device)
    run = _new_run(config, device)
    checkpoint = out_dir / CHECKPOINT
    if checkpoint.exists():
        _restore_checkpoint(run, config, checkpoint)
    start = run.step
    self_lmi = self_lmi_cache(images, config)
    result = TrainResult(
        model_path=out_dir / MODEL_FILE, checkpoint_path=checkpoint, loss_csv=out_dir / "loss.csv",
        loss_plot=out_dir / "loss.png", start_step=start, end_step=start, seconds_per_step=None,
    )
    began = time.perf_counter()
    run.model.train()
    bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", disable=not progress)
    while run.step < config.steps:
        loss = _train_step(run, images, self_lmi, config)
        run.losses.append(loss)
        run.step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if run.step % config.checkpoint_every == 0 or run.step == config.steps:
            _save_checkpoint(run, config, checkpoint)
            _write_losses(run.losses, result.loss_csv, result.loss_plot)
    bar.close()
    if run.step > start:
        result.end_step = run.step
        result.seconds_per_step = (time.perf_counter() - began) / (run.step - start)
    else:
        _write_losses(run.losses, result.loss_csv, result.loss_plot)
    save_model(run.ema, config, result.model_path, target_quantiles(slices_path, slices))
    return result
