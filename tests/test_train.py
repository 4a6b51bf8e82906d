import csv

import numpy as np
import pytest
import torch

import midiffusion.diffusion.train as train_module
from midiffusion.io import InputError
from midiffusion.config import DiffusionConfig
from midiffusion.diffusion.model import build_schedule, load_model, select_device
from midiffusion.diffusion.train import load_slices, train

TINY = dict(
    image_size=16, base_channels=8, channel_mults=[1, 2], attention_resolutions=[8], num_res_blocks=1,
    batch_size=8, timesteps=1000,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """64 slices of 16 x 16: a bright Gaussian blob of random centre and size on a -1 background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    images = []
    for _ in range(64):
        cy, cx = rng.uniform(5, 11, 2)
        radius = rng.uniform(2.5, 5)
        distance = np.hypot(yy - cy, xx - cx)
        images.append(np.where(distance < radius, 0.8 * np.exp(-(distance**2) / (2 * (radius / 1.5) ** 2)), -1.0))
    path = tmp_path_factory.mktemp("data") / "slices.npz"
    np.savez(path, images=np.asarray(images, dtype=np.float16)[:, None])
    return path


def config(**overrides) -> DiffusionConfig:
    return DiffusionConfig.from_dict(TINY | overrides)


def read_losses(out_dir):
    with open(out_dir / "loss.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [int(row["step"]) for row in rows], np.array([float(row["loss"]) for row in rows])


def test_config_from_dict_converts_and_rejects():
    cfg = DiffusionConfig.from_dict({"channel_mults": [1, 2], "attention_resolutions": [32], "lr": "3e-4", "steps": 10.0})
    assert cfg.channel_mults == (1, 2) and cfg.lr == 3e-4 and cfg.steps == 10
    with pytest.raises(InputError, match=r"attention_resolutions among the feature-map sizes \[64, 32\]"):
        DiffusionConfig.from_dict({"channel_mults": [1, 2]})  # the default's attention at 16 needs a third level
    with pytest.raises(InputError, match="learning_rate"):
        DiffusionConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(InputError, match="batch_size"):
        DiffusionConfig.from_dict({"batch_size": 2.5})
    with pytest.raises(InputError, match="channel_mults"):
        DiffusionConfig.from_dict({"channel_mults": 2})
    with pytest.raises(InputError, match="cond_dropout"):
        DiffusionConfig.from_dict({"cond_dropout": 1.0})
    with pytest.raises(InputError, match="anchor_contrast_p"):
        DiffusionConfig.from_dict({"anchor_contrast_p": 1.5})
    with pytest.raises(InputError, match="anchor_contrast_knots"):
        DiffusionConfig.from_dict({"anchor_contrast_knots": 1})


def test_load_slices_checks_the_file(tmp_path, blobs):
    assert load_slices(blobs, 16).dtype == torch.float32
    with pytest.raises(InputError, match="image_size"):
        load_slices(blobs, 32)
    np.savez(tmp_path / "bad.npz", images=np.full((2, 1, 16, 16), 3.0))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        load_slices(tmp_path / "bad.npz", 16)
    np.savez(tmp_path / "other.npz", slices=np.zeros((2, 1, 16, 16)))
    with pytest.raises(InputError, match="'images'"):
        load_slices(tmp_path / "other.npz", 16)


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in {"cuda", "mps", "cpu"}
    with pytest.raises(InputError, match="device"):
        select_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="not available"):
            select_device("cuda")


def test_training_lowers_the_loss_and_writes_outputs(tmp_path, blobs):
    cfg = config(steps=60, lr=2e-3, checkpoint_every=50)
    result = train(blobs, tmp_path, cfg, progress=False)
    steps, losses = read_losses(tmp_path)
    assert steps == list(range(1, 61))
    assert losses[-10:].mean() < 0.5 * losses[:10].mean()
    assert result.start_step == 0 and result.end_step == 60 and result.seconds_per_step > 0
    assert result.loss_plot.stat().st_size > 0
    loaded = load_model(result.model_path, "cpu")
    assert loaded.config == cfg and not loaded.model.training
    checkpoint = torch.load(result.checkpoint_path, weights_only=True)
    weights = loaded.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in checkpoint["ema"].items())  # model.pt holds the EMA
    assert not all(torch.equal(weights[k], v) for k, v in checkpoint["model"].items())


def test_min_snr_weights_spare_the_noisy_steps_and_damp_the_clean_ones():
    schedule = build_schedule(config())
    t = torch.tensor([0, 100, 500, 999])
    assert torch.equal(train_module._loss_weights(schedule, t, 0.0), torch.ones(4))
    weights = train_module._loss_weights(schedule, t, 5.0)
    snr = schedule.alpha_bar[t] / (1 - schedule.alpha_bar[t])
    assert torch.allclose(weights, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert weights[0] < 0.01 and weights[-1] == 1  # SNR ~ 1e4 at t = 0, ~ 4e-5 at t = T - 1
    assert torch.all(weights[1:] >= weights[:-1])


def test_random_contrast_is_one_curve_per_image_and_keeps_the_background():
    levels = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    unit = levels[torch.randint(len(levels), (6, 1, 12, 12), generator=torch.Generator().manual_seed(1))]
    remapped = train_module.random_contrast(unit, knots=5, generator=torch.Generator().manual_seed(0))
    assert remapped.shape == unit.shape and remapped.min() >= 0 and remapped.max() <= 1
    assert torch.all(remapped[unit == 0] == 0)
    curves = []
    for image, out in zip(unit, remapped):
        # A function of intensity: every pixel of one level maps to one value.
        curve = torch.stack([out[image == v].unique() for v in levels[1:]]).squeeze(1)
        curves.append(curve)
    assert len({tuple(c.tolist()) for c in curves}) == len(curves)  # each image its own curve
    monotone = [bool(torch.all(c[1:] >= c[:-1])) for c in curves]
    assert not all(monotone)  # curves are not restricted to increasing ones


def test_anchor_contrast_training_lowers_the_loss_and_resumes_old_checkpoints(tmp_path, blobs, monkeypatch):
    calls = []
    real_remap = train_module.random_contrast
    monkeypatch.setattr(train_module, "random_contrast", lambda *a, **k: calls.append(1) or real_remap(*a, **k))
    train(blobs, tmp_path, config(steps=60, lr=2e-3, checkpoint_every=60, anchor_contrast_p=0.5), progress=False)
    assert len(calls) > 40  # P(no remap in a batch of 8) = 1/256
    losses = read_losses(tmp_path)[1]
    assert losses[-10:].mean() < 0.5 * losses[:10].mean()
    # A checkpoint written before the anchor_contrast_* keys existed resumes as anchor_contrast_p = 0.
    old = tmp_path / "old"
    train(blobs, old, config(steps=2), progress=False)
    state = torch.load(old / "checkpoint.pt", weights_only=True)
    del state["config"]["anchor_contrast_p"], state["config"]["anchor_contrast_knots"]
    torch.save(state, old / "checkpoint.pt")
    assert train(blobs, old, config(steps=3), progress=False).start_step == 2


def test_min_snr_training_lowers_the_loss(tmp_path, blobs):
    train(blobs, tmp_path, config(steps=60, lr=2e-3, checkpoint_every=50, min_snr_gamma=5.0), progress=False)
    losses = read_losses(tmp_path)[1]  # the unweighted epsilon MSE is what loss.csv records
    assert losses[-10:].mean() < 0.5 * losses[:10].mean()


@pytest.fixture(scope="module")
def reference_losses(blobs, tmp_path_factory):
    """Losses of an uninterrupted 8-step run, the target of the resume tests."""
    out_dir = tmp_path_factory.mktemp("reference")
    train(blobs, out_dir, config(steps=8, checkpoint_every=3), progress=False)
    return read_losses(out_dir)[1]


def test_longer_run_continues_from_the_checkpoint(tmp_path, blobs, reference_losses):
    train(blobs, tmp_path, config(steps=4, checkpoint_every=3), progress=False)
    result = train(blobs, tmp_path, config(steps=8, checkpoint_every=3), progress=False)
    assert (result.start_step, result.end_step) == (4, 8)
    steps, losses = read_losses(tmp_path)
    assert steps == list(range(1, 9))
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    again = train(blobs, tmp_path, config(steps=8, checkpoint_every=3), progress=False)
    assert again.start_step == again.end_step == 8 and again.seconds_per_step is None


def test_killed_run_resumes_from_the_last_checkpoint(tmp_path, blobs, reference_losses, monkeypatch):
    real_step = train_module._train_step

    def dies_at_step_7(run, *args):
        if run.step == 7:
            raise KeyboardInterrupt
        return real_step(run, *args)

    monkeypatch.setattr(train_module, "_train_step", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(blobs, tmp_path, config(steps=8, checkpoint_every=3), progress=False)
    assert read_losses(tmp_path)[0] == list(range(1, 7))  # last checkpoint: step 6
    assert not (tmp_path / "model.pt").exists()
    monkeypatch.setattr(train_module, "_train_step", real_step)
    result = train(blobs, tmp_path, config(steps=8, checkpoint_every=3), progress=False)
    assert result.start_step == 6
    steps, losses = read_losses(tmp_path)
    assert steps == list(range(1, 9))
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)


def test_resume_with_another_model_config_is_refused(tmp_path, blobs):
    train(blobs, tmp_path, config(steps=1), progress=False)
    with pytest.raises(InputError, match="lr"):
        train(blobs, tmp_path, config(steps=2, lr=1e-3), progress=False)


def test_a_model_file_with_retired_settings_still_loads(tmp_path, blobs):
    result = train(blobs, tmp_path, config(steps=2), progress=False)
    state = torch.load(result.model_path, weights_only=True)
    state["config"] |= {"deform_copies": 3, "deform_pixels": 2.0}  # as files written before their removal
    torch.save(state, result.model_path)
    assert load_model(result.model_path, "cpu").config == config(steps=2)


def test_load_model_rejects_other_files(tmp_path):
    torch.save({"weights": {}}, tmp_path / "x.pt")
    with pytest.raises(InputError, match="x.pt"):
        load_model(tmp_path / "x.pt", "cpu")
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt", "cpu")


def test_run_moved_between_devices_resumes(tmp_path, blobs, reference_losses):
    """A CUDA generator state (16 bytes: seed and offset) in a CPU run's checkpoint, as after a GPU start."""
    train(blobs, tmp_path, config(steps=4, checkpoint_every=3), progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["rng"]["generator"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(state, tmp_path / "checkpoint.pt")
    result = train(blobs, tmp_path, config(steps=8, checkpoint_every=3), progress=False)
    assert (result.start_step, result.end_step) == (4, 8)
    steps, losses = read_losses(tmp_path)
    assert steps == list(range(1, 9))
    np.testing.assert_allclose(losses[:4], reference_losses[:4], rtol=1e-5)
    assert not np.allclose(losses[4:], reference_losses[4:])  # a fresh stream, not the saved one
