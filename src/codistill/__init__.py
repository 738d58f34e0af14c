"""codistill: online co-distillation of a CNN and a ViT segmentation student."""

__version__ = "0.1.0"
