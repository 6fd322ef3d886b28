"""`svd`: the kernel as a T x (S kh kw) matrix of rank R, i.e. a kh x kw convolution S -> R followed by a
1x1 convolution R -> T. Layer-Decomp is the truncated SVD (the optimum, by Eckart-Young), with the
singular values split evenly between the two factors."""

from __future__ import annotations

import torch

from .base import Format, KernelShape, largest, register_format


class SVD(Format):
    name = "svd"
    description = "truncated SVD of the T x (S kh kw) matricised kernel (kh x kw conv to R, then 1x1 conv)"

    def terms(self, tz):
        return [("r", "s", "h", "w"), ("t", "r")]

    def rank_names(self, tz):
        return ["r"]

    def rank_caps(self, shape: KernelShape, tz):
        return {"r": min(shape.t, shape.in_channels * shape.kh * shape.kw)}

    def ranks_for_budget(self, shape: KernelShape, tz, budget):
        cap = self.rank_caps(shape, tz)["r"]
        r = largest(range(1, cap + 1), lambda r: self.params(shape, tz, {"r": r}), budget)
        return None if r is None else {"r": r}

    def initialise_group(self, kernel, tz, ranks, seed, dec):  # the truncated SVD is the optimum: no choice
        t, s, kh, kw = kernel.shape
        r = ranks["r"]
        u, sigma, vh = torch.linalg.svd(kernel.reshape(t, -1), full_matrices=False)
        root = sigma[:r].sqrt()
        return [(root[:, None] * vh[:r]).reshape(r, s, kh, kw), u[:, :r] * root]


register_format(SVD())
