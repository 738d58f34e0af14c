from tests.conftest import repo_params
from tests.models.base import StudentTests


class TestSegFormerPvtV2B0(StudentTests):
    config = repo_params().models.vit
    parameter_range = (3.5, 4.0)
    low_channels = 32
