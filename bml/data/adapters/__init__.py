"""Release adapters: a real dataset's release tree, as its users have it on disk, turned into bml's clip
listing (one row per clip: id, label, split, one file per modality, the span of the file used).

One module per dataset (`bml/data/adapters/<dataset>.py`), each with:
- `EXPECTS`: a few lines saying what the release root must hold (printed by `bml datasets` and in errors);
- `list_clips(root: Path, settings: dict) -> Listing`: the clips of the release under the papers' split,
  sorted by clip_id, with every clip it cannot use in `skipped` (and why); raises `LayoutError` at once
  when `root` does not look like the release at all. `settings` is the `source:` section of
  params/datasets/<dataset>.yaml.

Torch-free and fast: listing reads directory entries and split lists, never decodes media.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

ADAPTERS = {  # dataset name -> module
    "cremad": "bml.data.adapters.cremad",
    "kinetics_sounds": "bml.data.adapters.kinetics_sounds",
    "ave": "bml.data.adapters.ave",
    "vggsound": "bml.data.adapters.vggsound",
    "ucf101": "bml.data.adapters.ucf101",
}
LISTS_DIR = Path(__file__).resolve().parents[1] / "lists"  # shipped split and class lists, one folder per dataset


class LayoutError(ValueError):
    """The root is not the expected release layout; the message says what was expected and what was found."""


@dataclass(frozen=True)
class Clip:
    clip_id: str  # unique, file-name safe: letters, digits, '_', '-', '.'; at most 64 characters
    label: int  # index into Listing.classes
    split: str  # "train", "val" or "test"
    paths: dict[str, Path]  # modality name ("audio", "visual", "flow") -> the file that holds it
    start: float = 0.0  # seconds: the span of the file that is used (AVE's event segments)
    end: float | None = None  # None: to the end of the file


@dataclass(frozen=True)
class Skip:
    clip_id: str  # the clip (or file) that cannot be used
    reason: str  # one line: what is wrong, naming the file


@dataclass
class Listing:
    classes: list[str]  # label index -> class name, in the papers' order
    clips: list[Clip]
    skipped: list[Skip] = field(default_factory=list)


def adapter(name: str):
    """The adapter module of dataset `name`."""
    if name not in ADAPTERS:
        raise ValueError(f"no release adapter for dataset {name!r}; adapters exist for {sorted(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name])


def list_release(name: str, root: str | Path, settings: dict) -> Listing:
    """List a release tree; LayoutError when `root` is missing or is not the release's layout."""
    root = Path(root).expanduser()
    module = adapter(name)
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder; dataset {name!r} expects:\n{module.EXPECTS}")
    return module.list_clips(root, settings)
