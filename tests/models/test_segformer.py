from codistill.config import StudentConfig
from tests.models.base import StudentTests


class TestSegFormerPvtV2B0(StudentTests):
    config = StudentConfig(arch="segformer", encoder="pvt_v2_b0")
    parameter_range = (3.5, 4.0)
    low_channels = 32
