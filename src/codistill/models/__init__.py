"""The two students: DeepLabV3+ (CNN) and a SegFormer-style model (ViT), one interface."""

from codistill.models import deeplabv3plus, segformer  # noqa: F401 - registers the architectures
from codistill.models.encoders import EncoderError
from codistill.models.output import StudentOutput, segment, upsample_logits
from codistill.models.registry import build_student, count_parameters, list_architectures

__all__ = [
    "EncoderError",
    "StudentOutput",
    "build_student",
    "count_parameters",
    "list_architectures",
    "segment",
    "upsample_logits",
]
