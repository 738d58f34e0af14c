from tests.conftest import repo_params
from tests.models.base import StudentTests


class TestDeepLabV3PlusResNet18(StudentTests):
    config = repo_params().models.cnn
    parameter_range = (12.0, 17.0)
    low_channels = 64
