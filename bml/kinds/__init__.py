"""The registry of modality kinds: one class per kind (bml/kinds/<kind>.py), one line here.

A dataset's modality names its kind (params/datasets/<name>.yaml, `modalities:`); decoding, features, packed
records, the loader and the encoders ask `KINDS[kind]`. A new kind is its module, its line below, and its
recipe schema (workflow/schemas/recipe.schema.yaml, `$defs.<kind>`).
"""

from __future__ import annotations

from bml.kinds.audio import Audio
from bml.kinds.base import Kind
from bml.kinds.flow import Flow
from bml.kinds.frames import Frames

KINDS: dict[str, Kind] = {kind.name: kind for kind in (Audio(), Frames(), Flow())}
