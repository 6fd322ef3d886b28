"""What the export stage is told."""

from ..options import Section, option
from .deploy import FORMS


class ExportConfig(Section, name="export", title="Export"):
    onnx: bool = option(True, "Export model.onnx and check it against onnxruntime.", execution=True)
    deploy_form: str = option("auto", "Each layer's ONNX form (auto: measured).", choices=FORMS, execution=True)
    deploy_batch: int = option(1, "The batch size the deployment form is chosen for.", minimum=1, execution=True)
