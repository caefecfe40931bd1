"""The code each kind of stage runs, derived: the bml modules its entry modules import, read with `ast`.

A stage is stale when a file of its code changes, under either engine; a hand list of those files goes out
of date the day someone adds an import (bml/data/decode.py, whose `select_frames` picks the evaluation
frames, was missing from training's). So the list is the import closure of the stage's entry modules: every
`import bml...` and `from bml... import ...` anywhere in a module (inside functions too), followed through
the modules they name. The plan's own modules are left out: what they decide reaches a stage as the values
whose hash the stage already carries (a new method in the registry must not rerun every finished cell).
Method modules are loaded by name (`load_method`), so a training cell adds its method's module itself.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from bml.config import PROJECT_ROOT, ConfigError

# the modules whose results are the plan's values (hashed into every stage), not a stage's code
PLAN_MODULES = (
    "bml.plan",
    "bml.config",
    "bml.datasets",
    "bml.layout",
    "bml.catalog",
    "bml.methods",
    "bml.methods.spec",
    "bml.methods.checks",
    "bml.dvc_stages",
    "bml.stage_code",
    "bml.cli",
)
# the modules each kind of stage's `bml` command enters through; `pkg.*` is every module of a package (the
# release adapters, loaded by name)
ENTRIES = {
    "generate": ("bml.data.sources", "bml.data.avdigits"),
    "list": ("bml.data.sources", "bml.data.adapters.*"),
    "extract": ("bml.data.extract",),
    "pack": ("bml.data.pack",),
    "train": ("bml.train",),
    "report": ("bml.report",),
}


def module_file(module: str) -> str | None:
    """The project-relative file of a bml module or package, or None when there is none."""
    base = PROJECT_ROOT / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return str(path.relative_to(PROJECT_ROOT))
    return None


def _expand(entry: str) -> list[str]:
    if not entry.endswith(".*"):
        return [entry]
    package = entry[:-2]
    folder = PROJECT_ROOT / package.replace(".", "/")
    return [package] + [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"]


def _imports(module: str, path: str) -> set[str]:
    """The bml modules `path` (the file of `module`) names in its imports, and the packages above them."""
    tree = ast.parse((PROJECT_ROOT / path).read_text(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from bml.data import speech`: a module
    named = {m for m in found if m == "bml" or m.startswith("bml.")}
    parents = {".".join(m.split(".")[:k]) for m in named for k in range(2, m.count(".") + 1)}
    return {m for m in named | parents if module_file(m)}


@functools.cache
def closure(entries: tuple[str, ...]) -> tuple[str, ...]:
    """The files of `entries` and of every bml module they import, transitively, less the plan's own."""
    seen: set[str] = set()
    todo = [m for e in entries for m in _expand(e)]
    while todo:
        module = todo.pop()
        if module in seen or module in PLAN_MODULES:
            continue
        seen.add(module)
        path = module_file(module)
        if path is None:
            raise ValueError(f"bml/stage_code.py: module {module!r} has no file under {PROJECT_ROOT}")
        todo += sorted(_imports(module, path) - seen)
    return tuple(sorted({module_file(m) for m in seen}))


def stage_code(kind: str, *modules: str) -> tuple[str, ...]:
    """The files whose change reruns a stage of `kind` (plus `modules`: a training cell's method; one defined
    outside the package, as a test registers, is not the project's code)."""
    return closure(ENTRIES[kind] + tuple(m for m in modules if m == "bml" or m.startswith("bml.")))


def file_hashes(files: tuple[str, ...], root: Path) -> dict[str, str]:
    """{file: sha256 of its bytes under `root`}: what a code witness holds for DVC to compare."""
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise ConfigError(f"{root.resolve()}: not a bml project (no {missing[0]}); run the command from its root")
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}
