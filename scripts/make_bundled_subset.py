"""Build the Fashion-MNIST subset bundled with the package (tnncompress/data/bundled/fashion-mnist).

Training split: 10,000 of the 60,000 images, 1,000 per class, drawn with a fixed seed.
Test split: the full official 10,000-image test set, so accuracies on it are the real test accuracies.

    python scripts/make_bundled_subset.py [--source /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from tnncompress.data import BUNDLED_FASHION_MNIST, SYSTEM_FASHION_MNIST, read_idx, write_idx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=SYSTEM_FASHION_MNIST)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    images = read_idx(args.source / "train-images-idx3-ubyte.gz")
    labels = read_idx(args.source / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(args.seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), args.per_class, replace=False)
                                   for c in range(int(labels.max()) + 1)]))
    BUNDLED_FASHION_MNIST.mkdir(parents=True, exist_ok=True)
    write_idx(BUNDLED_FASHION_MNIST / "train-images-idx3-ubyte.gz", images[keep])
    write_idx(BUNDLED_FASHION_MNIST / "train-labels-idx1-ubyte.gz", labels[keep])
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(args.source / name, BUNDLED_FASHION_MNIST / name)
    print(f"wrote {len(keep)} training and {len(read_idx(args.source / 't10k-labels-idx1-ubyte.gz'))} test "
          f"images to {BUNDLED_FASHION_MNIST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
