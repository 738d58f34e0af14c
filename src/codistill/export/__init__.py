"""Export: trained students to ONNX graphs, checked for parity with PyTorch."""

from codistill.export.onnx_graph import DeployableStudent, export_onnx
from codistill.export.parity import ParityError, check_parity

__all__ = ["DeployableStudent", "ParityError", "check_parity", "export_onnx"]
