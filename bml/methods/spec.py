"""The types of the method registry (bml/methods/__init__.py), torch-free: what a method declares about itself
(`MethodSpec`) and about each parameter it takes (`Param`), from which the plan derives its checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    """One parameter a method takes: its JSON-schema type and bounds, or its choices. Epoch numbers are of the
    method's `reference_epochs`-epoch schedule and scale with the protocol's (bml/methods/base.py: scale_epoch)."""

    type: str  # number, integer, boolean, or "choice" (one of `choices`)
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive minimum
    choices: tuple[Any, ...] = ()
    # an epoch count of one phase of the run (of the `reference_epochs` schedule): the plan refuses a value whose
    # scaled length leaves no epoch for the rest of the run (phase_problems)
    phase: bool = False

    def schema(self) -> dict:
        if self.choices:
            return {"const": self.choices[0]} if len(self.choices) == 1 else {"enum": list(self.choices)}
        bounds = {"minimum": self.minimum, "maximum": self.maximum, "exclusiveMinimum": self.above}
        return {"type": self.type} | {k: v for k, v in bounds.items() if v is not None}


PROBABILITY = Param("number", minimum=0, maximum=1)
EPOCH = Param("integer", minimum=0)
REFERENCE_EPOCHS = Param("integer", minimum=1)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str  # how tables and figures name it
    module: str  # the file that holds its code
    cls: str
    paper: str
    fusions: str = "any"  # any: every fusion head; split: heads whose logits split per modality; none: no head
    n_modalities: int | None = None  # 2: its formulas are defined for two modalities; None: any number >= 2
    trains: bool = True  # False: it evaluates runs trained by others (the ensemble)
    # the runs it reads, same dataset, protocol and seed: (method, fusion) patterns that `required_runs`
    # resolves; "<modality>" in a method stands for each of the dataset's modalities, "<fusion>" for the cell's own
    requires: tuple[tuple[str, str], ...] = ()
    modality: str | None = None  # uni-modal baselines: the one modality they see
    params: dict[str, Param] = field(default_factory=dict, compare=False)  # every key its YAML must set
    logs: dict[str, str] = field(default_factory=dict, compare=False)  # history prefix (<prefix>_<modality>) -> what
    # a head of its own (MLA's shared head, CRMT's orthogonal one): its runs' fusion is this name, in paths and
    # tables, never a catalog head it does not use; its build_model makes the head
    head: str = ""
    # problems(method params, train section, modalities) -> what is wrong with this combination, each naming the
    # key and its choices (a setting its dataset cannot use, a phase longer than the protocol); the plan refuses
    # the cell with them (bml/plan.py: resolve_cell), before any job
    problems: Callable[[dict, dict, list[str]], list[str]] | None = field(default=None, compare=False)
