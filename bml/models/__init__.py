"""bml's models: uni-modal encoders, fusion heads and the audio-visual model that joins them."""

from bml.models.encoders import (
    ENCODERS,
    ResNet18Audio,
    ResNet18Visual,
    SmallAudioCNN,
    SmallVisualCNN,
    build_encoders,
)
from bml.models.fusion import (
    FUSIONS,
    ConcatFusion,
    FiLMFusion,
    GatedFusion,
    ModelConfig,
    MultimodalModel,
    SumFusion,
    UnimodalModel,
    build_fusion,
    build_model,
)

__all__ = [
    "ENCODERS",
    "FUSIONS",
    "ConcatFusion",
    "FiLMFusion",
    "GatedFusion",
    "ModelConfig",
    "MultimodalModel",
    "ResNet18Audio",
    "ResNet18Visual",
    "SmallAudioCNN",
    "SmallVisualCNN",
    "SumFusion",
    "UnimodalModel",
    "build_encoders",
    "build_fusion",
    "build_model",
]
