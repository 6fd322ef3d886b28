"""What the data stage is told."""

from ..options import Section, option


class DataConfig(Section, name="data", title="Data"):
    spec: str | None = option(None, "Dataset spec (README: Data); none: no accuracy.", flat="data", short="-d")
    workers: int = option(2, "Data-loading worker processes (folder datasets).", minimum=0, execution=True, reuse=False)
