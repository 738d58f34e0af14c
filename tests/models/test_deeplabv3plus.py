from codistill.config import StudentConfig
from tests.models.base import StudentTests


class TestDeepLabV3PlusResNet18(StudentTests):
    config = StudentConfig(arch="deeplabv3plus", encoder="resnet18", output_stride=16)
    parameter_range = (12.0, 17.0)
    low_channels = 64
