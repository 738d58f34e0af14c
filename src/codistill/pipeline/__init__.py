"""Orchestrator edges: dvc.yaml and the Kubeflow components and pipeline, from the registry."""
