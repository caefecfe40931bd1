"""bml: a reproducibility pipeline for balanced multimodal learning."""

from bml.runtime import pin

pin()  # before numpy or torch load: the CPU kernels every number is computed with (bml/runtime.py)

__version__ = "0.1.0"
