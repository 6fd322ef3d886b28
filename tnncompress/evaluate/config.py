"""What the evaluation stage is told."""

from ..options import Section, option


class EvaluateConfig(Section, name="evaluate", title="Evaluation"):
    limit: int | None = option(None, "Evaluate the first N test samples.", flat="eval_limit", minimum=1, execution=True)
    batch_size: int = option(256, "Evaluation batch size.", short="-b", minimum=1, execution=True)
