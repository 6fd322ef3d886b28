"""Exact singular values of a 2-D convolution as a linear operator, by the FFT.

With circular padding a convolution is block doubly-circulant, and the 2-D DFT block-diagonalises it:
its singular values are those of the matrices P(a, b) = sum_pq K[:, :, p, q] e^{-2 pi i (ap/H + bq/W)},
one c_out x c_in matrix per frequency (Sedghi, Gupta & Long 2019). The pieces that make this hold for
every convolution PyTorch has:

* stride s: the polyphase split (Senderovich et al. 2022). A strided circular convolution on an H x W
  map is a stride-1 one on the (H/s) x (W/s) grid of s*s phases: P_s(a, b) = [P^(0,0) | ... | P^(s-1,s-1)],
  c_out x (s*s*c_in) per frequency. It needs H and W divisible by s;
* dilation d: the taps sit at d*p;
* a kernel larger than the map: taps that land on the same grid point add up (aliasing);
* groups: the matrix is block-diagonal per frequency, so each group is its own set of matrices;
* real kernels: P(-w) = conj(P(w)) has the same singular values, so only half the spectrum is
  computed (rfft2) and the mirrored half counted twice;
* a kernel whose every phase has a single tap (1x1 kernels, and k <= s): P(w) is one real matrix times a
  diagonal of unit phases, the same singular values at every frequency, so one SVD serves them all.

Padding offsets are cyclic shifts (unitary), and cross-correlation has the same singular values as
convolution, so neither appears. Zero padding is not circular: `padding_grid` gives the grid on which
the circular operator bounds the zero-padded one from above (see `layers.py`).
"""

from __future__ import annotations

import math

import torch

Pair = tuple[int, int]


def pair(v) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def check_grid(grid: Pair, stride: Pair, what: str = "input size") -> None:
    if grid[0] % stride[0] or grid[1] % stride[1]:
        raise ValueError(f"{what} {grid[0]}x{grid[1]} is not divisible by the stride {stride[0]}x{stride[1]}: "
                         "the exact singular values need whole phases")


def _circular_kernel(kernel: torch.Tensor, grid: Pair, dilation: Pair) -> torch.Tensor:
    """The kernel [co, ci, kh, kw] placed on the grid with its taps at (d*p mod H, d*q mod W)."""
    co, ci, kh, kw = kernel.shape
    (H, W), (dh, dw) = grid, dilation
    out = kernel.new_zeros(co, ci, H, W)
    for p in range(kh):
        for q in range(kw):
            out[:, :, (dh * p) % H, (dw * q) % W] += kernel[:, :, p, q]
    return out


def _phases(k: torch.Tensor, stride: Pair) -> torch.Tensor:
    """[co, ci, H, W] -> [co, ci*sh*sw, H/sh, W/sw]: phase (alpha, beta) holds taps (sh p + alpha, sw q + beta)."""
    co, ci, H, W = k.shape
    sh, sw = stride
    return (k.reshape(co, ci, H // sh, sh, W // sw, sw).permute(0, 1, 3, 5, 2, 4)
            .reshape(co, ci * sh * sw, H // sh, W // sw))


def tap_phases(kh: int, kw: int, grid: Pair, stride: Pair, dilation: Pair) -> list[tuple[int, int]] | None:
    """Per tap (p, q), its phase (alpha, beta), when every phase holds its taps at one grid point, so
    that P(w) is a real matrix times unit phases on its columns; None otherwise."""
    axes = []
    for k, n, s, d in zip((kh, kw), grid, stride, dilation, strict=True):
        where: dict[int, int] = {}
        for p in range(k):
            pos = (d * p) % n
            if where.setdefault(pos % s, pos) != pos:
                return None
        axes.append([((d * p) % n) % s for p in range(k)])
    return [(a, b) for a in axes[0] for b in axes[1]]


def _weights(width: int, half: int) -> torch.Tensor:
    """How many frequencies each rfft2 column stands for: 1 for column 0 (and W/2 when W is even),
    2 for the others (their mirror images are not computed)."""
    w = torch.full((half,), 2, dtype=torch.long)
    w[0] = 1
    if width % 2 == 0:
        w[-1] = 1
    return w


def transfer_matrices(kernel: torch.Tensor, grid: Pair, stride=1, dilation=1, groups: int = 1,
                      half: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-frequency matrices of the circular convolution and each one's multiplicity.

    Returns (P, counts): P [groups, H/sh, F, co/groups, ci_per_group*sh*sw] complex, F = W/sw (or
    W/sw//2 + 1 with `half`), and counts [H/sh, F], how many frequencies each matrix stands for."""
    grid, stride, dilation = pair(grid), pair(stride), pair(dilation)
    check_grid(grid, stride)
    co, ci = kernel.shape[:2]
    k = _phases(_circular_kernel(kernel, grid, dilation), stride)
    Hs, Ws = k.shape[-2:]
    if half:
        P = torch.fft.rfft2(k)
        counts = _weights(Ws, P.shape[-1])[None, :].expand(Hs, -1)
    else:
        P = torch.fft.fft2(k)
        counts = torch.ones(Hs, Ws, dtype=torch.long)
    P = P.reshape(groups, co // groups, k.shape[1], *P.shape[-2:]).permute(0, 3, 4, 1, 2)
    return P, counts


def fft_bytes(kernel_shape, grid, stride=1, dilation=1) -> int:
    """About the most memory `conv_singular_values` holds for a kernel of this shape, in elements of its
    dtype: the kernel placed on the grid, its phases, its rFFT (complex, half the frequencies) and the
    per-frequency matrices handed to the SVD. 0 when one SVD serves every frequency."""
    grid, stride, dilation = pair(grid), pair(stride), pair(dilation)
    co, ci, kh, kw = kernel_shape
    if tap_phases(kh, kw, grid, stride, dilation) is not None:
        return 0
    return 3 * co * ci * grid[0] * grid[1]  # measured: 2x (32x32 channels on 256x256: 1,052 MiB)


def conv_singular_values(kernel: torch.Tensor, grid, stride=1, dilation=1, groups: int = 1) -> torch.Tensor:
    """Every singular value of the circular convolution by `kernel` [co, ci/groups, kh, kw] on an H x W
    input (stride, dilation and groups as in F.conv2d), descending: (H/sh)(W/sw) * groups *
    min(co/groups, ci/groups * sh * sw) values. Computed in the kernel's dtype (float64 for exactness)."""
    grid, stride, dilation = pair(grid), pair(stride), pair(dilation)
    check_grid(grid, stride)
    co, ci, kh, kw = kernel.shape
    (sh, sw) = stride
    taps = tap_phases(kh, kw, grid, stride, dilation)
    if taps is not None:  # the same singular values at every frequency: one real SVD
        m = kernel.new_zeros(co, ci, sh, sw)
        for (p, q), (a, b) in zip(((p, q) for p in range(kh) for q in range(kw)), taps, strict=True):
            m[:, :, a, b] += kernel[:, :, p, q]
        sv = torch.linalg.svdvals(m.reshape(groups, co // groups, ci * sh * sw)).flatten()
        frequencies = (grid[0] // sh) * (grid[1] // sw)
        return sv.repeat(frequencies).sort(descending=True).values
    P, counts = transfer_matrices(kernel, grid, stride, dilation, groups)
    sv = torch.linalg.svdvals(P)  # [g, H', F, min]
    reps = counts[None, :, :, None].expand_as(sv).reshape(-1)
    return torch.repeat_interleave(sv.reshape(-1), reps.to(sv.device)).sort(descending=True).values


def conv_sigma_max(kernel: torch.Tensor, grid, stride=1, dilation=1, groups: int = 1) -> float:
    """The largest singular value of the circular convolution (the operator norm)."""
    return float(conv_singular_values(kernel, grid, stride, dilation, groups)[0])


def padding_grid(size: Pair, padding: Pair, stride: Pair) -> Pair:
    """The smallest grid, a multiple of the stride, at least n + 2p per axis: there the zero-padded
    convolution is the circular one restricted to an embedded input and to some of its outputs, so
    the circular singular values bound the zero-padded ones from above (interlacing)."""
    return tuple(math.ceil((n + 2 * p) / s) * s for n, p, s in zip(size, padding, stride, strict=True))
