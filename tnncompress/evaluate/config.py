"""What the evaluation stage is told."""

from ..formats.layer import PLANS
from ..options import Section, option


class EvaluateConfig(Section, name="evaluate", title="Evaluation"):
    limit: int | None = option(None, "Evaluate the first N test samples.", flat="eval_limit", minimum=1, execution=True)
    batch_size: int = option(256, "Evaluation batch size.", short="-b", minimum=1, execution=True)
    plan: str = option("measure", "conv_einsum plans of the evaluations: timed (kept in the plan cache), fewest "
                                  "FLOPs (factor chains are slower on small layers) or the dense kernel rebuilt.",
                       flat="eval_plan",
                       choices=PLANS, execution=True)
