"""What the report stage is told."""

from ..options import Section, option


class ReportConfig(Section, name="report", title="Report"):
    latency: bool = option(True, "Measure the latency of the original and the compressed model.", execution=True)
    latency_batches: list[int] = option([1, 32], "Batch sizes of the latency; repeatable.", minimum=1, execution=True)
