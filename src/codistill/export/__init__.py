"""Export: trained students to ONNX graphs, checked for parity with PyTorch.

The package imports nothing itself, so that serving can read the graphs' names
(``graph_io``) without loading PyTorch.
"""
