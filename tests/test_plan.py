"""The plan: params/ resolved into every stage and cell, checked before any job, one source for Snakemake, DVC and
`bml`; and staleness that is exact and the same under both engines (real Snakemake, real DVC, temp folders)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import PARAMS, REPO, run, tiny_project

from bml.config import ConfigError
from bml.datasets import load_dataset
from bml.dvc_stages import dvc_yaml
from bml.layout import Layout
from bml.plan import cell_name, digest, load_cell, load_pipeline, load_plan, overrides_of, parse_cell_name, resolve_cell


def test_the_default_plan_has_readable_cells_and_one_layout():
    plan = load_plan()
    assert len(plan.cells) == 9 * 6 and len({c.name for c in plan.cells}) == 54
    cell = plan.find("avdigits", "embedded", "ogm_ge", "concat", 0)
    assert cell.name == "avdigits-embedded-ogm_ge-concat-s0"
    assert cell.run_dir == "results/avdigits/embedded/concat/ogm_ge/seed0"
    assert cell.config["paths"]["packed_dir"] == "data/avdigits/embedded/packed"
    assert cell.config["data"]["modalities"] == {"audio": "audio", "visual": "frames"}
    assert "bml/methods/ogm.py" in cell.code and "bml/train.py" in cell.code
    ensemble = plan.find("avdigits", "embedded", "ensemble", "none", 3)
    assert ensemble.requires == ("avdigits-embedded-audio_only-none-s3", "avdigits-embedded-visual_only-none-s3")
    assert [(r.dataset, r.name) for r in plan.recipes] == [("avdigits", "embedded")]
    assert Layout().shard("avdigits", "embedded", 2) == "data/avdigits/embedded/shards/shard2.npy"


def test_the_all_matrix_trains_every_method_bml_has():
    """`make run-all` (matrices.all) holds every registered method with every fusion head it can use on the
    embedded dataset's two modalities, and each modality's uni-modal baseline."""
    from bml.methods import METHODS, allowed_fusions

    plan = load_plan(PARAMS, {"matrix": "all"})
    ran = {(c.method, c.fusion) for c in plan.cells}
    expected = {(m, f) for m, spec in METHODS.items() for f in allowed_fusions(spec, 2)}
    expected |= {(f"{m}_only", "none") for m in plan.datasets["avdigits"].modalities}
    assert ran == expected


def test_planning_imports_no_torch():
    # how long planning takes is a benchmark: benchmarks/plan_load.py
    code = "import sys; from bml.plan import load_plan; load_plan(); assert 'torch' not in sys.modules, 'torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_committed_dvc_yaml_is_the_plans():
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml(load_plan()), "run `bml plan --dvc-yaml dvc.yaml`"


def test_every_stage_name_of_dvc_yaml_is_readable_and_stable():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "train-avdigits-embedded-ogm_ge-concat-s0" in stages and "report" in stages and "plan" in stages
    train = stages["train-avdigits-embedded-ogm_ge-concat-s0"]
    assert train["cmd"] == "bml train --cell avdigits-embedded-ogm_ge-concat-s0 --threads 1"
    assert ".bml/plan/cell-avdigits-embedded-ogm_ge-concat-s0.json" in train["deps"]
    assert {"results/avdigits/embedded/concat/ogm_ge/seed0/checkpoint.pt": {"persist": True}} in train["outs"]
    ensemble = stages["train-avdigits-embedded-ensemble-none-s1"]
    assert "results/avdigits/embedded/none/audio_only/seed1/metrics.json" in ensemble["deps"]


def _cell(method="joint", fusion="concat", seed=0, sets=(), overrides=None):
    pipeline = load_pipeline(PARAMS, overrides)
    return resolve_cell(
        load_dataset("avdigits", PARAMS, pipeline),
        "embedded",
        method,
        fusion,
        seed,
        PARAMS,
        pipeline,
        Layout(),
        tuple(sets),
    )


def test_the_hash_covers_what_decides_the_numbers_only():
    base = _cell().hash
    assert _cell(sets=["train.num_workers=4"]).hash == base  # speed, not numbers
    assert _cell(overrides={"results_root": "elsewhere"}).hash == base  # where, not what
    assert _cell(seed=1).hash != base
    assert _cell(sets=["train.optimizer.lr=1e-3"]).hash != base
    assert _cell(overrides={"evaluation": {"noise_std": 0.5}}).hash != base
    assert _cell(overrides={"datasets": {"avdigits": {"n_clips": 400}}}).hash != base


def test_numbers_parse_as_numbers_everywhere():
    assert _cell(sets=["train.optimizer.lr=1e-3"]).config["train"]["optimizer"]["lr"] == 0.001
    assert _cell(sets=["train.optimizer.weight_decay=1.0e-4"]).config["train"]["optimizer"]["weight_decay"] == 1e-4
    plan = load_plan(PARAMS, {"datasets": {"avdigits": {"n_clips": "400"}}, "evaluation": {"noise_std": "1e0"}})
    assert plan.datasets["avdigits"].source["n_clips"] == 400 and plan.pipeline["evaluation"]["noise_std"] == 1.0
    assert overrides_of({**load_pipeline(PARAMS), "results_root": "x"}, PARAMS) == {"results_root": "x"}


@pytest.fixture
def params_copy(tmp_path):
    dest = tmp_path / "params"
    shutil.copytree(PARAMS, dest)
    return dest


def _edit(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _block(**kw):
    return lambda p: p["matrices"][p["matrix"]].__setitem__(0, {**p["matrices"][p["matrix"]][0], **kw})


@pytest.mark.parametrize(
    "file, change, message",
    [
        ("params.yaml", _block(dataset="nope"), "unknown dataset 'nope': no .*nope.yaml; datasets: .*avdigits"),
        ("params.yaml", _block(protocol="nope"), "unknown protocol 'nope'; choose one of .*embedded"),
        ("params.yaml", _block(runs=[{"method": "magic", "fusion": "concat"}]), "unknown method 'magic'"),
        (
            "params.yaml",
            _block(runs=[{"method": "ogm", "fusion": "film"}]),
            r"method 'ogm' works with fusion \['concat', 'sum'\]",
        ),
        (
            "params.yaml",
            _block(runs=[{"method": "audio_only", "fusion": "concat"}]),
            r"method 'audio_only' works with fusion \['none'\]",
        ),
        (
            "params.yaml",
            _block(runs=[{"method": "flow_only", "fusion": "none"}]),
            "dataset 'avdigits' has no modality 'flow'",
        ),
        (
            "params.yaml",
            _block(runs=[{"method": "ensemble", "fusion": "none"}]),
            r"key 'matrix\[0\].runs'.*ensemble needs the runs \['avdigits-embedded-audio_only-none-s0'.*add "
            r"\[\{'method': 'audio_only', 'fusion': 'none'\}, \{'method': 'visual_only', 'fusion': 'none'\}\]",
        ),
        ("params.yaml", _block(dataset="cremad"), "whose release root is not set; set datasets.cremad.root"),
        ("params.yaml", lambda p: p["extract"].__setitem__("n_shard", 3), r"key 'extract'.*n_shard.*allowed keys"),
        (
            "datasets/avdigits.yaml",
            lambda d: d["modalities"].__setitem__("smell", {"kind": "odour"}),
            "kind 'odour' is not one of",
        ),
        (
            "datasets/avdigits.yaml",
            lambda d: d["recipes"]["embedded"].pop("visual"),
            r"recipes.embedded.*needs settings for every modality.*missing \['visual'\]",
        ),
        (
            "datasets/avdigits.yaml",
            lambda d: d["recipes"]["embedded"]["audio"].__setitem__("preset", "mfcc"),
            "'mfcc' is not a preset of params/audio_presets.yaml",
        ),
        (
            "protocols/embedded.yaml",
            lambda d: d["datasets"].__setitem__("avdigits", {"recipe": "huge"}),
            "'huge' is not a recipe of dataset 'avdigits'",
        ),
        (
            "protocols/embedded.yaml",
            lambda d: d["train"]["optimizer"].__setitem__("name", "lamb"),
            "key 'train.optimizer.name': 'lamb' is not allowed",
        ),
        (
            "methods/opm.yaml",
            lambda d: d.__setitem__("p_exe", 1.5),
            "key 'p_exe': 1.5 is greater than the maximum of 1",
        ),
    ],
)
def test_a_bad_name_or_value_is_refused_naming_the_key_and_choices(params_copy, file, change, message):
    _edit(params_copy / file, change)
    with pytest.raises(ConfigError, match=message):
        load_plan(params_copy)


def test_a_protocol_that_does_not_cover_the_dataset_is_refused(params_copy, tmp_path):
    _edit(params_copy / "params.yaml", lambda p: p.__setitem__("datasets", {"cremad": {"root": str(tmp_path)}}))
    _edit(params_copy / "params.yaml", _block(dataset="cremad", runs=[{"method": "joint", "fusion": "concat"}]))
    with pytest.raises(ConfigError, match="protocol 'embedded' .* has no setting for dataset 'cremad'; it covers"):
        load_plan(params_copy)


# ---- the workflow: both engines, the same plan -------------------------------------------------------------


def snakemake(project, *args, check=True):
    return run(["snakemake", "-s", str(project / "Snakefile"), "--directory", str(project), *args], check=check)


def test_snakemake_refuses_a_bad_matrix_before_any_job(project_copy):
    tiny_project(project_copy, runs=[{"method": "ogm", "fusion": "gated"}])
    proc = snakemake(project_copy, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "method 'ogm' works with fusion ['concat', 'sum']" in proc.stdout + proc.stderr
    assert not (project_copy / "data").exists()


CELL_RULES = ("train", "evaluate_only")  # workflow/rules/train.smk: a job per cell, DVC's train-<cell> stage


def _snakemake_jobs(project) -> set[str]:
    """What a dry run would do: 'train <cell dir>' per training job, the rule name for the others."""
    jobs = set()
    for block in snakemake(project, "-n", "--cores", "2").stdout.split("\nrule ")[1:]:
        rule = block.split(":")[0].strip()
        if rule == "all":
            continue
        if rule in CELL_RULES:
            output = block.split("output: ")[1].split("\n")[0]
            jobs.add("train-" + _cell_name(output))
        else:
            jobs.add(rule)
    return jobs


def _cell_name(metrics_path: str) -> str:
    dataset, protocol, fusion, method, seed = metrics_path.split("/")[1:6]
    return cell_name(dataset, protocol, method, fusion, int(seed.removeprefix("seed")))


def _dvc_runs(project) -> set[str]:
    """The stages `dvc repro` ran (it runs them: DVC decides lazily, after each upstream stage)."""
    out = run(["dvc", "repro"], cwd=project).stdout
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")} - {"plan"}


@pytest.mark.slow
def test_both_engines_rerun_exactly_what_a_change_reaches(project_copy, tmp_path):
    from release_fixtures.cremad import make_tree

    tree = make_tree(tmp_path / "CREMA-D", emotions=("NEU", "HAP", "ANG"), n_train=3, n_test=1)
    # a second dataset in the same matrix, its audio in separate WAV files, through the same rules
    _edit(
        project_copy / "params" / "datasets" / "cremad.yaml",
        lambda d: d.__setitem__(
            "recipes",
            {
                "tiny": {
                    "span": {"start": 0.0, "duration": 3.0},
                    "audio": {"preset": "avdigits"},
                    "visual": {"fps": 2, "frames": 3, "size": 32},
                }
            },
        ),
    )
    _edit(
        project_copy / "params" / "protocols" / "embedded.yaml",
        lambda d: d["datasets"].__setitem__("cremad", {"recipe": "tiny", "train": {"batch_size": 4}}),
    )
    tiny_project(
        project_copy,
        extra_blocks=[
            {
                "dataset": "cremad",
                "protocol": "embedded",
                "seeds": [0],
                "runs": [{"method": "joint", "fusion": "concat"}],
            }
        ],
        datasets={"cremad": {"root": str(tree), "val_share": 0.34}},
    )
    snakemake(project_copy, "--cores", "2")
    assert json.loads((project_copy / "data/cremad/tiny/summary.json").read_text())["n_packed"] == 12
    assert (project_copy / "results/cremad/embedded/concat/joint/seed0/metrics.json").is_file()
    assert "Nothing to be done" in snakemake(project_copy, "--cores", "2").stderr

    # the same finished project under DVC: its own copy, its outputs committed as they are
    dvc_project = tmp_path / "dvc_project"
    shutil.copytree(project_copy, dvc_project, symlinks=True)
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["bml", "plan", "--dvc-yaml", "dvc.yaml"],
        ["bml", "plan", "--write", ".bml/plan"],
        ["dvc", "commit", "-f", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        run(cmd, cwd=dvc_project)
    assert "up to date" in run(["dvc", "status"], cwd=dvc_project).stdout

    # nothing changed: neither engine plans anything
    assert _snakemake_jobs(project_copy) == set() and _dvc_runs(dvc_project) == set()

    def both(change):
        change(project_copy)
        change(dvc_project)
        planned = _snakemake_jobs(project_copy)
        ran = _dvc_runs(dvc_project)
        snakemake(project_copy, "--cores", "2")  # bring the Snakemake copy up to date for the next step
        return planned, ran

    # one method parameter: that method's cells and the report, nothing else
    planned, ran = both(lambda p: _edit(p / "params/methods/ogm_ge.yaml", lambda d: d.__setitem__("alpha", 0.5)))
    assert planned == ran == {"train-avdigits-embedded-ogm_ge-concat-s0", "report"}
    # a report setting: the report alone
    planned, ran = both(lambda p: _edit(p / "params/params.yaml", lambda d: d["report"].__setitem__("alpha", 0.01)))
    assert planned == ran == {"report"}
    # a method's code: its cells (and the report)
    planned, ran = both(
        lambda p: (p / "bml/methods/ogm.py").write_text((p / "bml/methods/ogm.py").read_text() + "\n# edited\n")
    )
    assert planned == ran == {"train-avdigits-embedded-ogm_ge-concat-s0", "report"}
    # one protocol value of the cremad setting: the cremad cell (and the report)
    planned, ran = both(
        lambda p: _edit(
            p / "params/protocols/embedded.yaml",
            lambda d: d["datasets"]["cremad"]["train"].__setitem__("batch_size", 6),
        )
    )
    assert planned == ran == {"train-cremad-embedded-joint-concat-s0", "report"}


@pytest.mark.slow
def test_an_override_reaches_the_job_it_changes(project_copy):
    tiny_project(project_copy, runs=[{"method": "joint", "fusion": "concat"}])
    snakemake(project_copy, "--cores", "2", "--config", "results_root=elsewhere")
    metrics = project_copy / "elsewhere/avdigits/embedded/concat/joint/seed0/metrics.json"
    assert metrics.is_file() and not (project_copy / "results").exists()
    assert json.loads(metrics.read_text())["config"]["paths"]["run_dir"].startswith("elsewhere/")
    # a nested value typed on the command line reaches the generator (README: n_clips as a number)
    out = snakemake(
        project_copy, "-n", "--cores", "1", "--config", "datasets={avdigits: {n_clips: 30, seed: 1}}"
    ).stdout
    assert "rule generate" in out
    expected = digest(
        load_plan(project_copy / "params", {"datasets": {"avdigits": {"n_clips": 30, "seed": 1}}}).dataset_values(
            "avdigits"
        )
    )
    assert expected in out


# ---- the code a stage runs, derived --------------------------------------------------------------------------


def test_a_stages_code_is_every_bml_module_its_command_imports():
    """The import closure holds what a real import of the entry modules loads (less the plan's own modules,
    whose results are hashed values): bml/data/decode.py, which picks the evaluation frames, is training's."""
    from bml.stage_code import PLAN_MODULES, module_file, stage_code

    code = "import sys, bml.train, bml.methods.ogm; print(' '.join(m for m in sys.modules if m.startswith('bml.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    files = stage_code("train", "bml.methods.ogm")
    assert {module_file(m) for m in loaded if m not in PLAN_MODULES} <= set(files)
    assert "bml/data/decode.py" in files and "bml/methods/ogm.py" in files
    assert "bml/methods/opm.py" not in files and "bml/plan.py" not in files
    assert load_plan().find("avdigits", "embedded", "joint", "concat", 0).code == stage_code(
        "train", "bml.methods.baselines"
    )


def test_dvc_yaml_names_each_kind_of_code_once():
    """Training stages depend on one code witness each, not on their files; the plan stage on every file."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    train = stages["train-avdigits-embedded-ogm_ge-concat-s0"]
    assert ".bml/plan/code-train-ogm.json" in train["deps"]
    assert not [d for d in train["deps"] if d.endswith(".py")]
    assert {"bml/data/decode.py", "bml/train.py", "bml/methods/ogm.py"} <= set(stages["plan"]["deps"])
    assert "dvc.yaml linguist-generated=true" in (REPO / ".gitattributes").read_text().splitlines()


def _pretend_built(project):
    """Stand-ins for every output of both engines, recorded as up to date by each (`snakemake --touch`, `dvc
    commit`): staleness reads no contents, and building the matrix for real takes minutes."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    plan = load_plan(project / "params")
    lay = plan.layout
    outs = [
        next(iter(o)) if isinstance(o, dict) else o
        for s in stages.values()
        for k in ("outs", "metrics", "plots")
        for o in s.get(k, [])
    ]
    outs += [
        lay.packed(r.dataset, r.name, n)
        for r in plan.recipes
        for n in ("skipped.tsv", *[f"{s}.{e}" for s in ("train", "val", "test") for e in ("npy", "json")])
    ]
    for out in outs:
        if out.startswith(".bml/"):
            continue
        path = project / out
        if not path.suffix:  # a folder output
            path.mkdir(parents=True, exist_ok=True)
            path = path / "stand-in"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("stand-in\n")
    snakemake(project, "--touch", "--cores", "1")  # first: it leaves a .snakemake_timestamp in folder outputs
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["bml", "plan", "--write", ".bml/plan"],
        ["dvc", "commit", "-f", "-q"],
    ):
        run(cmd, cwd=project)
    snakemake(project, "--touch", "--cores", "1")  # again: DVC's commit may relink the outputs


def _snakemake_stale(project, edited: str = "") -> set[str]:
    """The jobs a dry run reruns that list `edited` among their inputs (a job downstream of a rerun one names
    only the upstream outputs as its reason), and with no edit, every job it reruns."""
    stale = set()
    for block in snakemake(project, "-n", "--cores", "1").stdout.split("\nrule ")[1:]:
        rule = block.split(":")[0].strip()
        inputs = block.split("input: ")[1].split("\n")[0].split(", ")
        if rule != "all" and (not edited or edited in inputs):
            stale.add("train-" + _cell_name(block.split("output: ")[1].split("\n")[0]) if rule in CELL_RULES else rule)
    return stale


def _dvc_stale(project) -> set[str]:
    """The stages `dvc status` calls changed once the plan stage has rewritten the witnesses."""
    run(["dvc", "repro", "-s", "plan"], cwd=project)
    out = run(["dvc", "status", "--json"], cwd=project).stdout
    return set(json.loads(out)) - {"plan"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, stale",
    [
        (  # the kinds registry (bml/kinds/) joins each kind's decoding, record and encoder, and the manifest
            # check and pack read it: so decode.py is code of generate and pack too (conservative, never stale)
            "bml/data/decode.py",
            {
                "generate",
                "extract",
                "pack",
                "train-avdigits-embedded-joint-concat-s0",
                "train-avdigits-embedded-ogm_ge-concat-s0",
            },
        ),
        ("bml/methods/ogm.py", {"train-avdigits-embedded-ogm_ge-concat-s0"}),
        ("bml/plotting.py", {"report"}),
    ],
)
def test_editing_a_module_a_stage_imports_makes_that_stage_stale_in_both_engines(project_copy, module, stale):
    tiny_project(project_copy, runs=[{"method": "joint", "fusion": "concat"}, {"method": "ogm_ge", "fusion": "concat"}])
    run(["bml", "plan", "--dvc-yaml", "dvc.yaml"], cwd=project_copy)
    _pretend_built(project_copy)
    assert _snakemake_stale(project_copy) == set() and _dvc_stale(project_copy) == set()
    path = project_copy / module
    path.write_text(path.read_text() + "\n# edited\n")
    assert _snakemake_stale(project_copy, module) == stale
    dvc_kind = {"extract": "extract", "pack": "pack", "manifest": "generate"}  # DVC names a data stage per dataset
    assert {dvc_kind.get(s.split("-")[0], s) for s in _dvc_stale(project_copy)} == stale


@pytest.mark.slow
def test_a_checkout_copied_with_its_snakemake_folder_has_nothing_to_do(project_copy, tmp_path):
    """Code inputs are relative, so the metadata a finished job left in .snakemake matches in the copy."""
    from release_fixtures.cremad import make_tree

    tree = make_tree(tmp_path / "CREMA-D", n_train=3, n_test=1)
    tiny_project(
        project_copy,
        datasets={"cremad": {"root": str(tree), "val_share": 0.34}},
        extra_blocks=[
            {
                "dataset": "cremad",
                "protocol": "tpami24_cremad",
                "seeds": [0],
                "runs": [{"method": "joint", "fusion": "concat"}],
            }
        ],
    )
    target = "data/cremad/manifest.csv"
    snakemake(project_copy, "--cores", "1", target)
    assert any((project_copy / ".snakemake" / "metadata").iterdir())
    copy = tmp_path / "copied"
    shutil.copytree(project_copy, copy, symlinks=True)
    out = snakemake(copy, "-n", "--cores", "1", target)
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout


# ---- a method's facts in one place ---------------------------------------------------------------------------


def test_a_methods_params_file_sets_exactly_what_its_spec_declares():
    """The registry declares each method's parameters; params/methods/<name>.yaml sets every one and no other."""
    from bml.methods import METHODS

    for name, spec in METHODS.items():
        path = PARAMS / "methods" / f"{name}.yaml"
        assert set(yaml.safe_load(path.read_text()) if path.is_file() else {}) == set(spec.params), name
    assert not (REPO / "workflow/schemas/methods.schema.yaml").exists()


@pytest.mark.parametrize(
    "method, item, message",
    [
        ("opm", "method.p_exe=1.5", r"key 'p_exe': 1.5 is greater than the maximum of 1; allowed: number in \[0, 1\]"),
        (
            "mmpareto",
            "method.gamma=0",
            r"key 'gamma': 0 is less than or equal to the minimum of 0; allowed: number > 0",
        ),
        ("relearning", "method.every=2.5", r"key 'every': 2.5 is not of type 'integer'; allowed: integer >= 1"),
        ("joint", "method.p=7", r"--set method.p: unknown key 'p'; choose one of \[\]"),
    ],
)
def test_a_bad_method_parameter_is_refused_with_its_key_and_range(method, item, message):
    with pytest.raises(ConfigError, match=message):
        _cell(method, sets=[item])


def test_a_new_method_is_its_spec_and_params_file(monkeypatch, params_copy):
    """Registered with its parameters and logged quantities, a method is checked, joins `make run-all`'s matrix
    with every head it can use, and its quantity reaches the figures, without another file to edit."""
    from bml.methods import METHODS, MethodSpec, Param, logged_quantities

    spec = MethodSpec(
        "damped",
        "Damped",
        "bml.methods.baselines",
        "Joint",
        "a test method",
        fusions="split",
        params={"beta": Param("number", minimum=0, maximum=2)},
        logs={"damping": "damping factor"},
    )
    monkeypatch.setitem(METHODS, "damped", spec)
    with pytest.raises(ConfigError, match=r"(?s)damped.yaml .*key '\(top level\)': 'beta' is a required property"):
        load_plan(params_copy, {"matrix": "all"})
    (params_copy / "methods" / "damped.yaml").write_text("beta: 2.5  # a test value\n")
    with pytest.raises(ConfigError, match=r"key 'beta': 2.5 is greater than the maximum of 2; allowed: number in"):
        load_plan(params_copy, {"matrix": "all"})
    (params_copy / "methods" / "damped.yaml").write_text("beta: 0.5  # a test value\n")
    plan = load_plan(params_copy, {"matrix": "all"})
    assert {c.fusion for c in plan.cells if c.method == "damped"} == {"concat", "sum"}
    assert plan.find("avdigits", "embedded", "damped", "sum", 5).config["method"] == {"beta": 0.5}
    assert logged_quantities()["damping"] == "damping factor"


# ---- one vocabulary ------------------------------------------------------------------------------------------


def test_bml_train_cell_resolves_that_cell_alone_and_the_same_as_the_plan(params_copy):
    plan = load_plan(PARAMS, {"matrix": "all"})
    for name in ("avdigits-embedded-ogm_ge-sum-s3", "avdigits-embedded-ensemble-none-s0"):
        alone, planned = load_cell(name, PARAMS, {"matrix": "all"}), plan.cell(name)
        assert alone == planned and alone.config == planned.config and alone.code == planned.code
        assert alone.requires == planned.requires and parse_cell_name(name)["seed"] == alone.seed
    _edit(params_copy / "methods" / "opm.yaml", lambda d: d.__setitem__("p_exe", 1.5))  # another cell's value
    assert load_cell("avdigits-embedded-joint-concat-s0", params_copy).method == "joint"
    with pytest.raises(ConfigError, match="p_exe"):
        load_cell("avdigits-embedded-opm-concat-s0", params_copy)
    with pytest.raises(ConfigError, match="no cell 'avdigits-embedded-joint-film-s0' in the matrix"):
        load_cell("avdigits-embedded-joint-film-s0")
    with pytest.raises(ConfigError, match="not a cell name: expected <dataset>-<protocol>-<method>-<fusion>-s<seed>"):
        load_cell("avdigits-joint-concat-s0")


def test_one_name_for_each_split_and_each_dataset_title():
    from bml.data import avdigits, manifest
    from bml.datasets import dataset_titles
    from bml.layout import SPLITS
    from bml.table_rows import DATASET_NAMES

    assert manifest.SPLITS is SPLITS and avdigits.SPLITS is SPLITS
    assert DATASET_NAMES == dataset_titles() and DATASET_NAMES["kinetics_sounds"] == "Kinetics-Sounds"
    assert load_plan().report_values()["titles"] == {"avdigits": "avdigits"}  # a new title reruns the report
