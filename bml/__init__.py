"""bml: a reproducibility pipeline for balanced multimodal learning."""

__version__ = "0.1.0"
