"""Local mutual information (LMI) between two images: the diffusion model's condition.

Definition and choice of parameters: docs/method.md, "Local mutual information (LMI)" and
"Design decisions".

For pixel p the patch x patch samples of the anchor around p are paired with the patch x patch
samples of the other image around p + d; their joint intensity distribution is a Parzen (Gaussian
kernel) soft histogram, and LMI(p) is the largest normalised MI over the offsets d of a
window x window search window.

How it is computed (no loop over pixels): the Parzen weights w_j of every pixel are computed once
per image, (N, bins, H, W). For one offset d the joint histogram at every pixel is the patch mean
(a box filter) of the outer product w_j(a)(x) w_k(b)(x + d), so each offset costs bins^2 products,
a separable box sum and bins^2 x log x per pixel. The anchor's marginal entropy does not depend
on d, the other image's marginal entropy for offset d is a shift of one map, and the joint's
marginals are the images' own marginals (weights sum to 1), so MI = H_a + H_b - H_ab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from midiffusion.io import InputError

DEFAULT_BINS = 8
DEFAULT_SIGMA = 0.07
# Budget for the per-chunk (N, bins, bins, rows, W) temporaries when chunk_rows=None. On an idle
# 2-core CPU 16-row chunks (cache-sized) were 20% faster than whole 128 x 128 images, but on a busy
# one 1.7x slower: every op's OpenMP barrier can wait for a descheduled thread, so fewer, bigger
# ops win there. On a GPU big chunks mean fewer kernel launches, which dominate at these sizes.
_CPU_CHUNK_BUDGET_BYTES = 32 * 2**20
_GPU_CHUNK_BUDGET_BYTES = 256 * 2**20
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
    """Shannon entropy (nats) of distributions p summed over `dims` (kept).

    Flooring p at the dtype's tiny makes 0 log 0 = 0 and is exact otherwise; measured 2-3x faster
    on CPU than torch.special.entr, and this is the layer's most expensive step.
    """
    return -p.clamp_min(torch.finfo(p.dtype).tiny).log_().mul_(p).sum(dim=dims, keepdim=True)


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


def _auto_chunk_rows(n: int, bins: int, height: int, width: int, itemsize: int, device: torch.device) -> int:
    per_row = 4 * n * bins * bins * width * itemsize  # product, row sums, joint, its x log x
    budget = _CPU_CHUNK_BUDGET_BYTES if device.type == "cpu" else _GPU_CHUNK_BUDGET_BYTES
    chunks = math.ceil(height / max(1, budget // per_row))
    return math.ceil(height / chunks)  # equal chunks: no tiny last chunk paying the per-op overhead


def _lmi_rows(
    wa: torch.Tensor, wb: torch.Tensor, h_a: torch.Tensor, h_b: torch.Tensor,
    rows: slice, patch: int, window: int,
) -> torch.Tensor:
    """LMI for output rows `rows` (all columns); see local_mutual_information for the operands.

    wa: (N, B, H + 2rp, W + 2rp) anchor weights already divided by patch^2 (so box sums are means),
    wb: (N, B, H + 2rp + 2rw, ...) other weights, h_a: (N, 1, H, W), h_b: (N, 1, H + 2rw, W + 2rw).
    """
    rp, rw = patch // 2, window // 2
    width = h_a.shape[-1]
    r0, r1 = rows.start, rows.stop
    wa_rows = wa[:, :, None, r0 : r1 + 2 * rp]  # (N, B, 1, h + 2rp, W + 2rp)
    ha = h_a[..., r0:r1, :]
    best = torch.zeros_like(ha)
    for dy in range(window):
        for dx in range(window):
            wb_rows = wb[:, None, :, r0 + dy : r1 + dy + 2 * rp, dx : dx + width + 2 * rp]
            joint = _box_sum(wa_rows * wb_rows, patch)  # (N, B, B, h, W)
            h_ab = _entropy(joint, (1, 2))[:, 0]
            hb = h_b[..., r0 + dy : r1 + dy, dx : dx + width]
            total = ha + hb
            nmi = 2 * (total - h_ab) / total.clamp_min(_FLAT_EPS)
            nmi = torch.where(total < _FLAT_EPS, torch.zeros_like(nmi), nmi)
            best = torch.maximum(best, nmi)
    return best.clamp_(0, 1)


@torch.no_grad()
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
    It is a fixed condition, never differentiated, so it runs without autograd, and in the inputs'
    dtype even under autocast (float16 entropies of 1e-3 probabilities would be too coarse).

    Defaults, bins = 8 and sigma = 0.07. A 3 x 3 patch has only 9 samples, and the upward bias of
    a plug-in MI estimate grows with the number of histogram cells: with the paper code's 27 bins
    (sigma half their spacing) even independent noise scores a mean NMI of ~0.47 (measured on a
    smooth random texture; 0.15 with 8 bins), and the cost, bins^2 per pixel and offset, is
    (27 / 8)^2 = 11x higher. sigma = 0.07 is half the bin spacing 1/7: a sample spreads over about
    three bins, so the estimate varies smoothly with intensity (no hard bin edges, robust to the
    noise in x_t) while neighbouring bins stay distinct. A CPU calibration of the whole method
    used this pair successfully (docs/method.md, "Design decisions"). Bin centres are symmetric about
    1/2, so LMI is invariant to inverting either image's intensities (T1w vs T2w contrast).

    Memory: the Parzen weights take N * bins * ((H + 2r)(W + 2r) + (H + 2r + 2s)(W + 2r + 2s))
    elements (r = patch // 2, s = window // 2), plus about 4 * N * bins^2 * (chunk_rows + 2r) * (W + 2r)
    elements of temporaries per row chunk. chunk_rows=None splits the rows into the fewest equal
    chunks whose temporaries fit in a budget (at least one row each): 32 MiB on CPU, 256 MiB on a
    GPU. The peak is then about the budget + 2 * N * bins * H * W elements: ~36 MiB on CPU for
    N = 4, 128 x 128, float32, 8 bins (measured: peak RSS +33 MiB). Very large batches
    (N * bins^2 * W over ~2 M elements, float32) exceed the CPU budget even at one row.
    """
    _check(anchor, other, patch, window, bins, sigma, chunk_rows)
    with torch.autocast(anchor.device.type, enabled=False):
        return _lmi(anchor, other, patch, window, bins, sigma, chunk_rows)


def _lmi(
    anchor: torch.Tensor, other: torch.Tensor, patch: int, window: int, bins: int, sigma: float,
    chunk_rows: int | None,
) -> torch.Tensor:
    n, _, height, width = anchor.shape
    rp, rw = patch // 2, window // 2
    wa = parzen_weights(F.pad(anchor, [rp] * 4, mode="replicate"), bins, sigma)
    wb = parzen_weights(F.pad(other, [rp + rw] * 4, mode="replicate"), bins, sigma)
    area = patch * patch
    h_a = _entropy(_box_sum(wa, patch) / area, (1,))
    h_b = _entropy(_box_sum(wb, patch) / area, (1,))
    wa /= area  # joint = box sum of (wa / area) * wb = the patch mean of the outer product
    if chunk_rows is None:
        chunk_rows = _auto_chunk_rows(n, bins, height, width + 2 * rp, anchor.element_size(), anchor.device)
    out = torch.empty_like(anchor)
    for r0 in range(0, height, chunk_rows):
        rows = slice(r0, min(r0 + chunk_rows, height))
        out[..., rows, :] = _lmi_rows(wa, wb, h_a, h_b, rows, patch, window)
    return out


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
