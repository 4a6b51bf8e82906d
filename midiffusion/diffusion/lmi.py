"""Local mutual information (LMI) between two images: the diffusion model's condition.

Definition and choice of parameters: docs/method.md, "Local mutual information (LMI)" and
"Design decisions".

For pixel p the patch x patch samples of the anchor around p are paired with the patch x patch
samples of the other image around p + d; their joint intensity distribution is a Parzen (Gaussian
kernel) soft histogram, and LMI(p) is the largest normalised MI over the offsets d of a
window x window search window.

How it is computed (no loop over pixels): the Parzen weights of every pixel are computed once per
image, (N, bins, H, W). The joint histogram of pixel p and offset d is the patch mean of the outer
products w(a)(p + u) w(b)(p + d + u)^T over the patch's samples u: the matrix product A_p^T B_(p+d)
of the (patch^2, bins) matrices that hold the two patches' weights. So one batched matrix product
(torch.bmm: BLAS, every cell written once) per row of the search window gives the joints of a
chunk of pixels, then bins^2 x log x per pixel and offset. The anchor's marginal entropy does not
depend on d, the other image's marginal entropy for offset d is a shift of one map, and the joint's
marginals are the images' own marginals (weights sum to 1), so MI = H_a + H_b - H_ab.
The cost is bins^2 per pixel and offset whatever the intensities, since the weights are floored
(_floored_weights): no subnormal floats, which are ~100x slower on CPUs, so uniform noise costs
what a brain slice with its empty bins costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..io import InputError

DEFAULT_BINS = 8
DEFAULT_SIGMA = 0.07


@dataclass(frozen=True)
class _Budget:
    """Memory budgets (bytes): per chunk for its joints and their logs, per group of images for
    their patch matrices."""

    chunk_bytes: int
    group_bytes: int


# On CPU the chunks stay small: the ops on them are bound by memory bandwidth (on one thread 32 MiB
# chunks were 1.3-2x faster than 128 MiB ones). The groups are larger, so that a batch of small images
# pays the ~40 per-group ops once: on a busy CPU every op's OpenMP barrier can wait for a descheduled
# thread. On a GPU, big chunks and groups mean fewer kernel launches.
_CPU_BUDGET = _Budget(chunk_bytes=32 * 2**20, group_bytes=128 * 2**20)
_GPU_BUDGET = _Budget(chunk_bytes=512 * 2**20, group_bytes=2 * 2**30)
_FLAT_EPS = 1e-12


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map model-space images in [-1, 1] to [0, 1] (clipped), the range LMI expects. Any shape."""
    return ((x + 1) / 2).clamp(0, 1)


def parzen_weights(x: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """Gaussian soft-binning weights of each pixel, normalised over bins.

    x: (N, 1, H, W) in [0, 1] -> (N, bins, H, W); bin centres c_j = j / (bins - 1).
    A softmax of the log-kernel is the normalised kernel, and stays finite when sigma is so small
    that every exp underflows.
    """
    # Correctly rounded centres (float64, then cast): symmetric about 1/2, so v -> 1 - v permutes bins.
    centres = (torch.arange(bins, dtype=torch.float64) / (bins - 1)).to(x.device, x.dtype)
    logits = -((x - centres.view(1, -1, 1, 1)) ** 2) / (2 * sigma**2)
    return torch.softmax(logits, dim=1)


def _box_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over size x size windows of the last two dims ("valid": each shrinks by size - 1)."""
    if size == 1:
        return x.clone()
    height, width = x.shape[-2] - size + 1, x.shape[-1] - size + 1
    rows = x[..., :height, :] + x[..., 1 : height + 1, :]
    for i in range(2, size):
        rows += x[..., i : i + height, :]
    out = rows[..., :width] + rows[..., 1 : width + 1]
    for i in range(2, size):
        out += rows[..., i : i + width]
    return out


def _entropy(p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Shannon entropy (nats) of distributions p > 0 (from floored weights) summed over `dims` (kept)."""
    return -(p.log() * p).sum(dim=dims, keepdim=True)


def _floored_weights(x: torch.Tensor, bins: int, sigma: float, patch: int) -> torch.Tensor:
    """parzen_weights floored at f = patch * sqrt(tiny) (tiny: the dtype's smallest normal float).

    Then every product in a joint, (weight / patch^2) x weight >= tiny, and every cell is a normal
    float > 0: far-off bins whose Gaussian weights are subnormal or 0 cost like any other (subnormal
    arithmetic is ~100x slower on x86 CPUs), and no log sees 0. Each weight moves by at most f
    (3e-19 in float32, 4e-154 in float64 for patch 3), each histogram cell by at most 3f, so each
    entropy by at most bins^2 * 3f * (1 + |ln 3f|) < 1e-12 for bins <= 100: below float32's own
    rounding of the entropies (~1e-7) and far below the tests' 1e-5.
    """
    return parzen_weights(x, bins, sigma).clamp_min(patch * math.sqrt(torch.finfo(x.dtype).tiny))


def _check(
    anchor: torch.Tensor, other: torch.Tensor, patch: int, window: int, bins: int, sigma: float,
    chunk_rows: int | None,
) -> None:
    if anchor.ndim != 4 or anchor.shape[1] != 1:
        raise InputError(f"anchor: expected shape (N, 1, H, W), got {tuple(anchor.shape)}")
    if other.shape != anchor.shape:
        raise InputError(f"other: shape {tuple(other.shape)} differs from anchor's {tuple(anchor.shape)}")
    if not anchor.is_floating_point() or other.dtype != anchor.dtype or other.device != anchor.device:
        raise InputError("anchor, other: expected floating-point tensors of the same dtype and device")
    for name, value in (("patch", patch), ("window", window)):
        if value < 1 or value % 2 == 0:
            raise InputError(f"{name}: expected a positive odd size, got {value}")
    if bins < 2:
        raise InputError(f"bins: expected at least 2, got {bins}")
    if not sigma > 0:
        raise InputError(f"sigma: expected > 0, got {sigma}")
    if chunk_rows is not None and chunk_rows < 1:
        raise InputError(f"chunk_rows: expected a positive number of rows or None, got {chunk_rows}")


def _budget(device: torch.device) -> _Budget:
    return _CPU_BUDGET if device.type == "cpu" else _GPU_BUDGET


def _part_size(count: int, item_bytes: int, budget: int) -> int:
    """Items per part when `count` items are split into the fewest parts that fit `budget` (at
    least one item each), all equal: no tiny last part paying the per-op overhead."""
    parts = math.ceil(count / max(1, budget // item_bytes))
    return math.ceil(count / parts)


def _patch_matrices(w: torch.Tensor, patch: int, bins_first: bool) -> torch.Tensor:
    """The weights of the patch x patch samples around every pixel, one matrix per pixel.

    w: (N, B, Y + patch - 1, X + patch - 1) -> contiguous (N, Y, X, patch^2, B), or
    (N, Y, X, B, patch^2) if bins_first.
    """
    # Channels last first, so that the copy moves runs of B weights (10x faster than from w).
    pixels = w.permute(0, 2, 3, 1).contiguous().unfold(1, patch, 1).unfold(2, patch, 1)  # (N, Y, X, B, p, p)
    return pixels.flatten(-2) if bins_first else pixels.permute(0, 1, 2, 4, 5, 3).flatten(3, 4)


def _joint_x_log_x(
    anchor_patches: torch.Tensor, other_patches: torch.Tensor, grid_width: int, window: int, chunk: int,
) -> torch.Tensor:
    """sum J log J (= -H_ab) of the joint J of every grid pixel p and offset: (window, P, window).

    anchor_patches: (G, Q, B), the anchor's patch matrices / Q, other_patches: (G, B, Q), the
    other's, both on one grid of G pixels in rows of grid_width; the offset (dy, dx) pairs p with the
    other's patch at p + dy * grid_width + dx. The P = G - (window - 1) * (grid_width + 1) pixels
    whose offsets stay on the grid are taken in chunks of `chunk` pixels.
    """
    other_patches = other_patches.contiguous()  # the views below assume its layout
    n_grid, patch_area, bins = anchor_patches.shape
    n_pixels = n_grid - (window - 1) * (grid_width + 1)
    x_log_x = anchor_patches.new_empty(window, n_pixels, window)
    joint = anchor_patches.new_empty(window, min(chunk, n_pixels), window * bins, bins)
    log_joint = torch.empty_like(joint)
    matrix_size = bins * patch_area
    for start in range(0, n_pixels, chunk):
        size = min(chunk, n_pixels - start)
        for dy in range(window):
            # The other's patches at p + dy * grid_width + (0 .. window - 1) are consecutive matrices
            # of other_patches: one (window * B, Q) view per pixel, overlapping the next pixel's.
            first = other_patches.storage_offset() + (start + dy * grid_width) * matrix_size
            others = other_patches.as_strided((size, window * bins, patch_area), (matrix_size, patch_area, 1), first)
            torch.bmm(others, anchor_patches[start : start + size], out=joint[dy, :size])  # J^T per (p, dx)
        cells, logs = joint[:, :size], log_joint[:, :size]
        torch.log(cells, out=logs).mul_(cells)
        torch.sum(logs.unflatten(2, (window, bins)).flatten(3), dim=-1, out=x_log_x[:, start : start + size])
    return x_log_x


def _joint_x_log_x_tracked(anchor_patches: torch.Tensor, other_patches: torch.Tensor, grid_width: int,
                           window: int) -> torch.Tensor:
    """_joint_x_log_x for autograd, which records no out= ops: one plain slice of other_patches per
    offset (the backward of overlapping strided views is 5x slower). All pixels in one chunk: the
    backward keeps every chunk's joints anyway (window^2 * bins^2 per grid pixel), and each slice's
    backward writes a gradient the size of other_patches."""
    n_pixels = anchor_patches.shape[0] - (window - 1) * (grid_width + 1)
    anchors = anchor_patches[:n_pixels]
    sums = []
    for dy in range(window):
        for first in range(dy * grid_width, dy * grid_width + window):
            joint = torch.bmm(other_patches[first : first + n_pixels], anchors)  # J^T per pixel, (B, B)
            sums.append(torch.xlogy(joint, joint).sum(dim=(1, 2)))  # keeps only J for the backward
    return torch.stack(sums).view(window, window, n_pixels).transpose(1, 2)  # (dy, P, dx)


def local_mutual_information(
    anchor: torch.Tensor,
    other: torch.Tensor,
    patch: int = 3,
    window: int = 3,
    bins: int = DEFAULT_BINS,
    sigma: float = DEFAULT_SIGMA,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Local normalised mutual information of `other` against `anchor`.

    anchor, other: (N, 1, H, W) in [0, 1], same dtype and device -> (N, 1, H, W) in [0, 1].
    Both are padded by replication, so the output has the input's shape. LMI(p) is the maximum
    over offsets d in the window x window search window of NMI = 2 I / (H_anchor + H_other)
    (natural log; 0 where H_anchor + H_other < 1e-12) between the anchor's patch x patch samples
    around p and the other's around p + d, estimated with a Parzen soft histogram: bin centres
    c_j = j / (bins - 1), weights exp(-(v - c_j)^2 / (2 sigma^2)) normalised over j.
    As the condition it runs without autograd, reusing its buffers in place; it is differentiable
    (autograd on, fresh buffers) only when grad is enabled and an input requires grad, as for the LMI
    gradient guidance of sampling.py. It runs in the inputs' dtype even under autocast (float16
    entropies of 1e-3 probabilities would be too coarse).

    Defaults, bins = 8 and sigma = 0.07. A 3 x 3 patch has only 9 samples, and the upward bias of
    a plug-in MI estimate grows with the number of histogram cells: with the paper code's 27 bins
    (sigma half their spacing) even independent noise scores a mean NMI of ~0.47 (measured on a
    smooth random texture; 0.15 with 8 bins), and the cost, bins^2 per pixel and offset, is
    (27 / 8)^2 = 11x higher. sigma = 0.07 is half the bin spacing 1/7: a sample spreads over about
    three bins, so the estimate varies smoothly with intensity (no hard bin edges, robust to the
    noise in x_t) while neighbouring bins stay distinct. A CPU calibration of the whole method
    used this pair successfully (docs/method.md, "Design decisions"). Bin centres are symmetric about
    1/2, so LMI is invariant to inverting either image's intensities (T1w vs T2w contrast).

    Memory: the images are taken in groups; per image, the padded Parzen weights, the two images'
    patch matrices (2 * patch^2 * bins elements per pixel of the (H + 2s) x (W + 2s) grid,
    s = window // 2) and a few window^2 maps of entropies; within a group, chunks of chunk_rows grid
    rows (the group's images stacked) hold their joints and logs, 2 * window^2 * bins^2 elements per
    grid pixel. chunk_rows=None makes the groups and the chunks as few and equal as fit their
    budgets (at least one image, one row): on CPU 128 MiB per group, 32 MiB per chunk; on a GPU
    2 GiB and 512 MiB. For N = 4, 128 x 128, float32 on CPU: 8 bins run one group in chunks of 52
    rows (measured: peak RSS +78 MiB), 27 bins two groups of 2 images in chunks of 4 rows (+106 MiB).
    """
    _check(anchor, other, patch, window, bins, sigma, chunk_rows)
    grid_pixels = (anchor.shape[-2] + window - 1) * (anchor.shape[-1] + window - 1)
    image_bytes = (2 * patch**2 * bins + 4 * window**2) * grid_pixels * anchor.element_size()
    group = _part_size(anchor.shape[0], image_bytes, _budget(anchor.device).group_bytes)
    tracked = torch.is_grad_enabled() and (anchor.requires_grad or other.requires_grad)
    with torch.autocast(anchor.device.type, enabled=False), torch.set_grad_enabled(tracked):
        return torch.cat([
            _lmi(anchor[first : first + group], other[first : first + group], patch, window, bins, sigma, chunk_rows)
            for first in range(0, anchor.shape[0], group)
        ])


def _lmi(
    anchor: torch.Tensor, other: torch.Tensor, patch: int, window: int, bins: int, sigma: float,
    chunk_rows: int | None,
) -> torch.Tensor:
    """local_mutual_information of one group of images, on the other's grid of patch centres.

    The other image is padded by r + s (r = patch // 2, s = window // 2), so the centres of its
    patches form a grid of (H + 2s) x (W + 2s) pixels, in which the offsets (dy, 0 .. window - 1)
    of a pixel are consecutive; the anchor is padded by r, plus 2s at the bottom and right, to lie
    on the same grid, whose extra pixels are computed (about 4s / H more work) and dropped.
    """
    n, _, height, width = anchor.shape
    rp, rw = patch // 2, window // 2
    grid_height, grid_width = height + 2 * rw, width + 2 * rw
    area = patch * patch
    wa = _floored_weights(F.pad(anchor, [rp, rp + 2 * rw, rp, rp + 2 * rw], mode="replicate"), bins, sigma, patch)
    wb = _floored_weights(F.pad(other, [rp + rw] * 4, mode="replicate"), bins, sigma, patch)
    h_a = _entropy(_box_sum(wa, patch) / area, (1,)).flatten()  # (n * grid pixels)
    h_b = _entropy(_box_sum(wb, patch) / area, (1,)).flatten()
    if chunk_rows is None:
        row_bytes = 2 * window**2 * bins**2 * grid_width * anchor.element_size()
        chunk_rows = _part_size(n * grid_height, row_bytes, _budget(anchor.device).chunk_bytes)
    # wa / area: the product of the patch matrices is then the patch mean of the outer products.
    patches = (_patch_matrices(wa / area, patch, bins_first=False).flatten(0, 2),
               _patch_matrices(wb, patch, bins_first=True).flatten(0, 2))
    if torch.is_grad_enabled():
        x_log_x = _joint_x_log_x_tracked(*patches, grid_width, window)  # (dy, P, dx)
    else:
        x_log_x = _joint_x_log_x(*patches, grid_width, window, chunk_rows * grid_width)
    n_pixels = x_log_x.shape[1]
    h_b_at_offsets = h_b.as_strided((window, n_pixels, window), (grid_width, 1, 1))  # H_b(p + d)
    total = h_a[None, :n_pixels, None] + h_b_at_offsets
    nmi = 2 * (total + x_log_x) / total.clamp_min(_FLAT_EPS)
    nmi = torch.where(total < _FLAT_EPS, torch.zeros_like(nmi), nmi)
    best = anchor.new_zeros(n * grid_height * grid_width)
    best[:n_pixels] = nmi.amax(dim=(0, 2))
    return best.view(n, 1, grid_height, grid_width)[..., :height, :width].clamp(0, 1)


def lmi_condition(
    anchor_unit: torch.Tensor,
    x_t_unit: torch.Tensor,
    self_lmi: torch.Tensor | None = None,
    **lmi_kwargs,
) -> torch.Tensor:
    """The denoiser's condition [LMI(anchor, x_t), LMI(anchor, anchor)].

    anchor_unit, x_t_unit: (N, 1, H, W) in [0, 1] (see to_unit); self_lmi: (N, 1, H, W), the
    cached LMI(anchor, anchor), computed here when None. lmi_kwargs go to
    local_mutual_information. Returns (N, 2, H, W).
    """
    if self_lmi is None:
        self_lmi = local_mutual_information(anchor_unit, anchor_unit, **lmi_kwargs)
    elif self_lmi.shape != anchor_unit.shape:
        raise InputError(f"self_lmi: shape {tuple(self_lmi.shape)} differs from anchor's {tuple(anchor_unit.shape)}")
    return torch.cat([local_mutual_information(anchor_unit, x_t_unit, **lmi_kwargs), self_lmi], dim=1)
