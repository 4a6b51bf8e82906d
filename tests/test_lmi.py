"""Local mutual information: the vectorised layer against a direct, slow reference and its properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from midiffusion.diffusion import lmi
from midiffusion.diffusion.lmi import (
    DEFAULT_BINS,
    DEFAULT_SIGMA,
    lmi_condition,
    local_mutual_information,
    parzen_weights,
    to_unit,
)
from midiffusion.io import InputError


pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(v: float, bins: int, sigma: float) -> list[float]:
    kernel = [math.exp(-((v - j / (bins - 1)) ** 2) / (2 * sigma**2)) for j in range(bins)]
    total = sum(kernel)
    return [k / total for k in kernel]


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def _nmi(joint: list[list[float]]) -> float:
    """NMI = 2 I / (H_a + H_b) of a joint distribution, by the textbook formulas."""
    pa = [sum(row) for row in joint]
    pb = [sum(col) for col in zip(*joint)]
    mi = sum(
        p * math.log(p / (pa[j] * pb[k])) for j, row in enumerate(joint) for k, p in enumerate(row) if p > 0
    )
    h = _entropy(pa) + _entropy(pb)
    return 0.0 if h < 1e-12 else 2 * mi / h


def reference_lmi(a: np.ndarray, b: np.ndarray, patch: int, window: int, bins: int, sigma: float) -> np.ndarray:
    """The definition, pixel by pixel: a, b (H, W) in [0, 1] -> (H, W). Replication = clamped indices."""
    height, width = a.shape
    rp, rw = patch // 2, window // 2

    def at(img: np.ndarray, y: int, x: int) -> float:
        return float(img[min(max(y, 0), height - 1), min(max(x, 0), width - 1)])

    out = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            best = 0.0
            for dy in range(-rw, rw + 1):
                for dx in range(-rw, rw + 1):
                    joint = [[0.0] * bins for _ in range(bins)]
                    for qy in range(-rp, rp + 1):
                        for qx in range(-rp, rp + 1):
                            wa = _weights(at(a, y + qy, x + qx), bins, sigma)
                            wb = _weights(at(b, y + dy + qy, x + dx + qx), bins, sigma)
                            for j in range(bins):
                                for k in range(bins):
                                    joint[j][k] += wa[j] * wb[k] / patch**2
                    best = max(best, _nmi(joint))
            out[y, x] = best
    return out


def _random(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _structured(height: int, width: int) -> torch.Tensor:
    """Ramp, step edge and a flat block: (1, 1, H, W) float64 in [0, 1]."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    img = (x / (width - 1)) * 0.5 + (y >= height // 2) * 0.4
    img[:3, :4] = 0.2
    return img.double()[None, None].clamp(0, 1)


def _checkerboard(size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((y + x) % 2).to(dtype)[None, None]


CASES = [  # patch, window, bins, sigma, chunk_rows
    (3, 3, DEFAULT_BINS, DEFAULT_SIGMA, None),
    (3, 3, 5, 0.2, 2),
    (3, 5, 6, 0.1, 1),
    (5, 3, 4, 0.05, 4),
    (1, 3, 3, 0.3, None),
]


@pytest.mark.parametrize(("patch", "window", "bins", "sigma", "chunk_rows"), CASES)
def test_matches_reference(patch, window, bins, sigma, chunk_rows):
    pairs = [
        (_random((1, 1, 9, 11), 0), _random((1, 1, 9, 11), 1)),
        (_structured(9, 11), _random((1, 1, 9, 11), 2)),
        (_structured(9, 11), 1 - _structured(9, 11)),
    ]
    for a, b in pairs:
        expected = reference_lmi(a[0, 0].numpy(), b[0, 0].numpy(), patch, window, bins, sigma)
        for dtype in (torch.float64, torch.float32):
            got = local_mutual_information(a.to(dtype), b.to(dtype), patch, window, bins, sigma, chunk_rows)
            assert got.dtype == dtype
            np.testing.assert_allclose(got[0, 0].double().numpy(), expected, rtol=0, atol=1e-5)


def test_paper_bins_match_reference():
    """config/paper.yaml's 27 bins with sigma 0.031: far-off bins' weights underflow in float32 (floored)."""
    pairs = [(_random((1, 1, 5, 6), 20), _random((1, 1, 5, 6), 21)), (_structured(5, 6), 1 - _structured(5, 6))]
    for a, b in pairs:
        expected = reference_lmi(a[0, 0].numpy(), b[0, 0].numpy(), 3, 3, 27, 0.031)
        for dtype in (torch.float64, torch.float32):
            got = local_mutual_information(a.to(dtype), b.to(dtype), bins=27, sigma=0.031)
            np.testing.assert_allclose(got[0, 0].double().numpy(), expected, rtol=0, atol=1e-5)


def test_image_groups_do_not_change_values(monkeypatch):
    """Budgets of 1 byte: every image its own group, every grid row its own chunk."""
    a, b = _random((3, 1, 9, 7), 22), _random((3, 1, 9, 7), 23)
    whole = local_mutual_information(a, b, bins=5)
    monkeypatch.setattr(lmi, "_CPU_BUDGET", lmi._Budget(chunk_bytes=1, group_bytes=1))
    torch.testing.assert_close(local_mutual_information(a, b, bins=5), whole, rtol=0, atol=1e-12)


def test_floored_weights_keep_joint_cells_normal():
    """Every product of a weight / patch^2 and a weight is a normal float, even where exp underflows."""
    x = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float32).view(1, 1, 1, 3)
    w = lmi._floored_weights(x, bins=27, sigma=0.031, patch=3)
    assert (w.amin() / 9) * w.amin() >= torch.finfo(torch.float32).tiny
    torch.testing.assert_close(w, parzen_weights(x, bins=27, sigma=0.031), rtol=0, atol=1e-18)


def test_batch_and_chunking_do_not_change_values():
    a, b = _random((3, 1, 12, 10), 3), _random((3, 1, 12, 10), 4)
    whole = local_mutual_information(a, b, chunk_rows=100)
    for chunk in (1, 5):
        torch.testing.assert_close(local_mutual_information(a, b, chunk_rows=chunk), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(local_mutual_information(a[1:2], b[1:2]), whole[1:2], rtol=0, atol=1e-12)


def test_self_information_exceeds_independent_noise():
    a = torch.nn.functional.avg_pool2d(_random((2, 1, 24, 24), 5), 3, stride=1)  # smooth texture
    a = (a - a.amin()) / (a.amax() - a.amin())
    noise = _random(a.shape, 6)
    assert local_mutual_information(a, a).mean() > local_mutual_information(a, noise).mean() + 0.02


def test_checkerboard_equals_parzen_value_and_tends_to_one():
    """Interior 3 x 3 patches of a 0/1 checkerboard hold 5 samples of one value and 4 of the other,
    paired deterministically at every offset, so LMI is the NMI of (5 u u^T + 4 v v^T) / 9 with
    u, v the Parzen weights of 0 and 1: below 1 because of the smoothing, and 1 as sigma -> 0."""
    board = _checkerboard(8)
    values = []
    for sigma in (0.2, 0.1, DEFAULT_SIGMA, 0.04, 0.02, 0.005):
        u, v = _weights(0.0, DEFAULT_BINS, sigma), _weights(1.0, DEFAULT_BINS, sigma)
        joint = [[(5 * u[j] * u[k] + 4 * v[j] * v[k]) / 9 for k in range(DEFAULT_BINS)] for j in range(DEFAULT_BINS)]
        interior = local_mutual_information(board, board, sigma=sigma)[0, 0, 1:-1, 1:-1]
        torch.testing.assert_close(interior, torch.full_like(interior, _nmi(joint)), rtol=0, atol=1e-10)
        values.append(_nmi(joint))
    assert values == sorted(values) and values[2] < 0.99 and values[-1] > 1 - 1e-9


def test_textured_self_lmi_tends_to_one_as_sigma_shrinks():
    a = _random((2, 1, 12, 12), 7)
    means = [local_mutual_information(a, a, sigma=s).mean().item() for s in (0.1, DEFAULT_SIGMA, 0.02, 0.005)]
    assert means == sorted(means) and means[1] < 0.9 and means[-1] > 0.98


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_invariant_to_intensity_inversion(dtype):
    """Bin centres j / (bins - 1) are symmetric about 1/2, so v -> 1 - v only permutes the bins."""
    a, b = _random((2, 1, 10, 9), 8, dtype), _random((2, 1, 10, 9), 9, dtype)
    for bins in (DEFAULT_BINS, 7):
        lmi = local_mutual_information(a, b, bins=bins)
        torch.testing.assert_close(local_mutual_information(1 - a, b, bins=bins), lmi, rtol=0, atol=1e-5)
        torch.testing.assert_close(local_mutual_information(a, 1 - b, bins=bins), lmi, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shape_range_and_flat_patches(dtype):
    a = torch.cat([_random((1, 1, 7, 13), 10, dtype), torch.full((1, 1, 7, 13), 0.3, dtype=dtype)])
    b = _random((2, 1, 7, 13), 11, dtype)
    out = local_mutual_information(a, b)
    assert out.shape == a.shape and out.dtype == dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # A flat anchor patch is independent of anything: MI = 0 (the Parzen entropy itself is > 0).
    assert out[1].max() < 1e-5
    # With a kernel so narrow that the weights are one-hot, flat patches have zero entropy: 0/0 -> 0.
    flat = torch.zeros((1, 1, 5, 5), dtype=dtype)
    for other in (flat, torch.ones_like(flat)):
        zero_entropy = local_mutual_information(flat, other, sigma=1e-3)
        assert torch.equal(zero_entropy, torch.zeros_like(flat))


def test_parzen_weights_are_normalised_even_when_every_kernel_underflows():
    x = torch.tensor([0.0, 0.45, 0.93, 1.0], dtype=torch.float32).view(1, 1, 1, 4)
    w = parzen_weights(x, bins=8, sigma=1e-4)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(1, 1, 4))
    assert w.argmax(dim=1).tolist() == [[[0, 3, 7, 7]]]  # the nearest centres


def test_to_unit_and_condition():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0])
    torch.testing.assert_close(to_unit(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    anchor, x_t = to_unit(_random((2, 1, 8, 8), 12) * 2 - 1), _random((2, 1, 8, 8), 13)
    cond = lmi_condition(anchor, x_t, bins=6)
    assert cond.shape == (2, 2, 8, 8)
    torch.testing.assert_close(cond[:, :1], local_mutual_information(anchor, x_t, bins=6))
    torch.testing.assert_close(cond[:, 1:], local_mutual_information(anchor, anchor, bins=6))
    cached = torch.full((2, 1, 8, 8), 0.25, dtype=torch.float64)
    assert torch.equal(lmi_condition(anchor, x_t, self_lmi=cached, bins=6)[:, 1:], cached)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"patch": 2}, "patch"), ({"window": 0}, "window"), ({"bins": 1}, "bins"), ({"sigma": 0.0}, "sigma"),
     ({"chunk_rows": 0}, "chunk_rows")],
)
def test_bad_arguments_are_named(kwargs, name):
    a = _random((1, 1, 5, 5), 14)
    with pytest.raises(InputError, match=name):
        local_mutual_information(a, a, **kwargs)


def test_bad_shapes_are_named():
    a = _random((1, 1, 5, 5), 15)
    with pytest.raises(InputError, match="anchor"):
        local_mutual_information(a[0], a[0])
    with pytest.raises(InputError, match="other"):
        local_mutual_information(a, a[..., :4])
    with pytest.raises(InputError, match="self_lmi"):
        lmi_condition(a, a, self_lmi=a[..., :4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    a, b = _random((2, 1, 16, 16), 16, torch.float32), _random((2, 1, 16, 16), 17, torch.float32)
    got = local_mutual_information(a.cuda(), b.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), local_mutual_information(a, b), rtol=0, atol=1e-5)
