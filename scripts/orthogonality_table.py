"""The setting of the dissertation's Table 7.2 for our SC-Fac layer: |conv(x)| / |x| - 1 on Gaussian
inputs, 64 input channels, 16 x 16 maps, circular padding, parameters drawn at random (not the delta the
layer starts as). Prints a Markdown table: `python scripts/orthogonality_table.py [--samples 100]`."""

from __future__ import annotations

import argparse

import torch

from tnncompress.spectral import OrthogonalConv2d

# name, (in, out, kernel, stride, dilation, groups, padding)
CASES = [("standard 3x3", (64, 64, 3, 1, 1, 1, 1)), ("dilated 2", (64, 64, 3, 1, 2, 1, 2)),
         ("strided 2 (kernel 2)", (64, 256, 2, 2, 1, 1, 0)), ("groups 4", (64, 64, 3, 1, 1, 4, 1)),
         ("groups 16", (64, 64, 3, 1, 1, 16, 1))]


def deviations(case, dtype, samples: int, seed: int = 0) -> torch.Tensor:
    ci, co, k, s, d, g, pad = case
    layer = OrthogonalConv2d(ci, co, k, s, pad, d, g, padding_mode="circular", dtype=dtype, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (layer.skew_h, layer.skew_w):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        x = torch.randn(samples, ci, 16, 16, generator=gen, dtype=torch.float64).to(dtype)
        y = layer(x)
    return (y.flatten(1).double().norm(dim=1) / x.flatten(1).double().norm(dim=1) - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    print("| convolution | float32: mean ± std | float32: max abs | float64: max abs |")
    print("|---|---:|---:|---:|")
    for name, case in CASES:
        d32, d64 = deviations(case, torch.float32, args.samples), deviations(case, torch.float64, args.samples)
        print(f"| {name} | ({d32.mean():+.2e} ± {d32.std():.2e}) | {d32.abs().max():.2e} | {d64.abs().max():.2e} |")


if __name__ == "__main__":
    main()
