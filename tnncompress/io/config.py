"""What the load stage is told: the checkpoint, its architecture, and how far to trust it."""

from ..options import Section, option


class ModelConfig(Section, name="model", title="Model"):
    checkpoint: str | None = option(None, "A .pt/.pth state dict or a .safetensors file.", argument=True)
    arch: str | None = option(None, "torchvision:NAME, tnncompress:NAME or package.module:factory (default: detect).")
    trust_checkpoint: bool = option(False, "Allow what runs code: a pickled module, a module:factory in metadata.")
    input_size: str | None = option(None, "C,H,W (default: the data's, the metadata's, the architecture's).")
