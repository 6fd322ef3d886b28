"""Train a reference (teacher) checkpoint of the tnncompress zoo, reproducibly.

    python scripts/train_reference.py --model resnet32 --data fashion-mnist --epochs 30 --seed 0 \
        --out tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors

Writes the state dict as safetensors (metadata: architecture, seed, command, versions) and, next to it,
a JSON file with the training history and the final test metrics. MODELS.md records the result.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

import torch

from tnncompress import __version__
from tnncompress.data import load_data
from tnncompress.io import save_state_dict
from tnncompress.models import create_model
from tnncompress.train import TrainConfig, train_classifier


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet32")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    train = load_data(args.data, "train")
    test = load_data(args.data, "test")
    print(f"train: {train.source}, {len(train)} images; test: {len(test)} images", file=sys.stderr)
    model = create_model(args.model, num_classes=train.num_classes, in_channels=train.input_size[0])
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device=args.device)
    result = train_classifier(model, train, test, config, log=lambda m: print(m, file=sys.stderr, flush=True))
    command = "python scripts/train_reference.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    meta = {"arch": f"tnncompress:{args.model}", "num_classes": str(train.num_classes),
            "in_channels": str(train.input_size[0]), "input_size": ",".join(map(str, train.input_size)),
            "data": args.data, "seed": str(args.seed), "command": command,
            "tnncompress_version": __version__, "torch_version": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(model.state_dict(), args.out, metadata=meta)
    record = {**meta, "train_source": train.source, "train_samples": len(train),
              "device": args.device, "threads": torch.get_num_threads(), "platform": platform.platform(),
              "processor": platform.processor(), **result}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(result["test"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
