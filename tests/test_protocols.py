"""Each paper's setting as a protocol: every protocol plans on every dataset it covers, its values are the
papers' (spot checks against the authors' code), every method's schedule scales with the protocol's length by
one rule, and the published numbers name settings bml can run."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PARAMS

from bml.config import ConfigError, read_yaml
from bml.data.loader import FRAME_KINDS
from bml.datasets import load_dataset
from bml.layout import Layout
from bml.methods import METHODS, PUBLISHED_TITLES, allowed_fusions, load_method, method_spec
from bml.methods.base import RunContext, scale_epoch
from bml.methods.relearning import relearn_epochs
from bml.plan import load_pipeline, load_plan, resolve_cell

PROTOCOLS = sorted(p.stem for p in (PARAMS / "protocols").glob("*.yaml"))
COVERED = [(p, d) for p in PROTOCOLS for d in read_yaml(PARAMS / "protocols" / f"{p}.yaml")["datasets"]]
REAL = ["ave", "cremad", "kinetics_sounds", "ucf101", "vggsound"]
TRAINED = sorted(m for m, spec in METHODS.items() if spec.trains)


@pytest.fixture
def params_with_roots(tmp_path) -> Path:
    """A copy of params/ whose real datasets have a release root (an empty folder: planning reads no media)."""
    params = tmp_path / "params"
    shutil.copytree(PARAMS, params)
    pipeline = yaml.safe_load((params / "params.yaml").read_text())
    pipeline["datasets"] = {**pipeline["datasets"], **{d: {"root": str(tmp_path / d)} for d in REAL}}
    (params / "params.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return params


def cell(protocol: str, dataset: str, method: str, fusion: str = "concat", sets: tuple[str, ...] = ()) -> dict:
    """A resolved cell configuration from the shipped params/ (a release root is not needed to resolve one)."""
    pipeline = load_pipeline(PARAMS)
    return resolve_cell(
        load_dataset(dataset, PARAMS, pipeline), protocol, method, fusion, 0, PARAMS, pipeline, Layout(), sets
    ).config


def method_of(config: dict):
    """The Method object a run of `config` builds (no data: the schedule is what these tests read)."""
    spec = method_spec(config["run"]["method"])
    run = RunContext(config, config["data"]["modalities"], 6, torch.device("cpu"), {}, {})
    return load_method(spec.name)(spec, config["method"], run)


# ---- every protocol plans ------------------------------------------------------------------------------


def test_the_papers_settings_are_there_and_the_old_joint_one_is_gone():
    assert {"ogm_cvpr22", "tpami24_ks", "tpami24_cremad", "mmpareto_icml24", "relearning_eccv24"} <= set(PROTOCOLS)
    assert {"balancebench", "embedded"} <= set(PROTOCOLS) and "bml_tpami24" not in PROTOCOLS
    covered = {d for _, d in COVERED}
    assert set(REAL) <= covered  # every real dataset is covered by some paper's setting


def test_every_protocol_plans_every_method_on_every_dataset_it_covers(params_with_roots):
    """One matrix with a block per (protocol, dataset): every uni-modal run, the ensemble and every trained
    method with every fusion it works with; load_plan checks names, values, recipes and required runs."""
    pipeline = yaml.safe_load((params_with_roots / "params.yaml").read_text())
    blocks = []
    for protocol, dataset in COVERED:
        modalities = list(load_dataset(dataset, params_with_roots, load_pipeline(params_with_roots)).modalities)
        runs = [{"method": f"{m}_only", "fusion": "none"} for m in modalities]
        runs += [{"method": "ensemble", "fusion": "none"}]
        runs += [{"method": m, "fusion": f} for m in TRAINED for f in allowed_fusions(METHODS[m], len(modalities))]
        blocks.append({"dataset": dataset, "protocol": protocol, "seeds": [0], "runs": runs})
    pipeline["matrices"]["every_protocol"] = blocks
    pipeline["matrix"] = "every_protocol"
    (params_with_roots / "params.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    plan = load_plan(params_with_roots)
    assert {(c.protocol, c.dataset) for c in plan.cells} == set(COVERED)
    assert {c.method for c in plan.cells} >= set(TRAINED) | {"ensemble"}
    # each (dataset, recipe) the protocols name is one extraction, shared by every protocol that names it
    assert sorted((r.dataset, r.name) for r in plan.recipes) == sorted({(c.dataset, c.recipe) for c in plan.cells})


@pytest.mark.parametrize("protocol, dataset", COVERED)
def test_the_frames_a_protocol_asks_for_are_stored_by_its_recipe(protocol, dataset):
    config = cell(protocol, dataset, "joint")
    train, settings = config["train"], config["data"]["settings"]
    for m, kind in config["data"]["modalities"].items():
        if kind in FRAME_KINDS:
            assert max(train["train_frames"], train["eval_frames"]) <= settings[m]["frames"], m


def test_a_real_dataset_needs_its_root_in_a_matrix_but_not_to_resolve_a_cell():
    assert cell("ogm_cvpr22", "cremad", "joint")["data"]["recipe"] == "ogm"
    runs = [{"method": "joint", "fusion": "concat"}]
    block = {"dataset": "cremad", "protocol": "ogm_cvpr22", "seeds": [0], "runs": runs}
    with pytest.raises(ConfigError, match="uses dataset 'cremad', whose release root is not set"):
        load_plan(PARAMS, {"matrix": "real", "matrices": {"real": [block]}})


def test_a_protocol_refuses_a_dataset_it_does_not_cover():
    with pytest.raises(ConfigError, match=r"protocol 'tpami24_ks' .* has no setting for dataset 'cremad'"):
        cell("tpami24_ks", "cremad", "ogm")


# ---- the papers' values (spot checks, each against the authors' code) -----------------------------------


def test_ogm_cvpr22_is_the_ogm_ge_code():
    # GeWu-Lab/OGM-GE_CVPR2022 main.py: SGD 1e-3 / 0.9 / 1e-4, StepLR(70, 0.1), batch 64, 100 epochs, OGM_GE 0-50;
    # README: alpha 0.8 for CREMA-D, 0.1 for VGGSound; CramedDataset.py: 1 frame; VGGSoundDataset.py: 3
    cremad, vgg = cell("ogm_cvpr22", "cremad", "ogm_ge"), cell("ogm_cvpr22", "vggsound", "ogm_ge")
    assert cremad["train"]["optimizer"] == {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4}
    assert cremad["train"]["scheduler"] == {"name": "step", "step_size": 70, "gamma": 0.1}
    assert (cremad["train"]["batch_size"], cremad["train"]["epochs"]) == (64, 100)
    assert (cremad["train"]["train_frames"], vgg["train"]["train_frames"]) == (1, 3)
    assert (cremad["method"]["alpha"], vgg["method"]["alpha"]) == (0.8, 0.1)
    assert cremad["method"] | {"alpha": 0.1} == vgg["method"]  # only alpha differs between the two datasets
    assert cremad["method"]["noise"] is True and cremad["method"]["warmup_epochs"] == 0
    assert (cremad["method"]["modulation_starts"], cremad["method"]["modulation_ends"]) == (0, 50)
    # the paper's OGM ablation row: the same without the noise (main.py --modulation OGM)
    assert cell("ogm_cvpr22", "vggsound", "ogm_noise_free")["method"] == vgg["method"] | {"noise": False}


def test_the_two_tpami_settings_differ_where_the_authors_say():
    # BML_TPAMI2024: KS from config.py / main.py / train_ogm.sh; CREMA-D from the maintainers' issue #3
    ks, cd = cell("tpami24_ks", "kinetics_sounds", "ogm"), cell("tpami24_cremad", "cremad", "ogm")
    assert ks["train"]["optimizer"] == {"name": "adamw", "lr": 5e-5, "weight_decay": 0.01}
    assert cd["train"]["optimizer"] == {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01}
    assert (ks["train"]["scheduler"]["step_size"], cd["train"]["scheduler"]["step_size"]) == (40, 20)
    assert ks["train"]["batch_size"] == cd["train"]["batch_size"] == 32
    assert (ks["method"]["alpha"], ks["method"]["modulation_ends"]) == (0.8, 60)
    assert (cd["method"]["alpha"], cd["method"]["modulation_ends"]) == (2.6, 80)
    for config in (ks, cd):  # OGM_GE (noise) and main.py's `warm_up = 1 if epoch <= 5`: six epochs
        assert config["method"]["noise"] is True and config["method"]["warmup_epochs"] == 6
        assert [method_of(config).active(e) for e in range(8)] == [False] * 6 + [True] * 2
    opm = cell("tpami24_ks", "kinetics_sounds", "opm")["method"]  # train_opm.sh
    assert (opm["q_base"], opm["lam"], opm["p_exe"], opm["warmup_epochs"]) == (0.5, 0.5, 0.7, 6)
    # spatial_transforms.py / KS.py: 112-px frames, RandomResizedCrop(112, scale=(0.25, 1)); BalanceBenchmark: 224
    assert ks["data"]["recipe"] == "fbank_112" and ks["data"]["settings"]["visual"]["size"] == 112
    assert ks["train"]["frame_crop_scale"] == [0.25, 1.0]
    bb = cell("balancebench", "kinetics_sounds", "joint")
    assert bb["data"]["settings"]["visual"]["size"] == 224 and "frame_crop_scale" not in bb["train"]


def test_balancebench_runs_balancebenchs_own_method_settings():
    # GeWu-Lab/BalanceBenchmark configs/trainer_config.yaml and global_config.yaml
    ogm = cell("balancebench", "kinetics_sounds", "ogm")
    assert ogm["train"]["optimizer"] == {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01}
    assert (ogm["train"]["scheduler"]["step_size"], ogm["train"]["epochs"], ogm["train"]["batch_size"]) == (10, 30, 32)
    assert (ogm["method"]["alpha"], ogm["method"]["noise"]) == (0.3, True)  # OGM: alpha 0.3, method OGM_GE
    assert [method_of(ogm).active(e) for e in range(30)] == [e >= 10 for e in range(30)]  # epochs 10-80 of 30
    opm = cell("balancebench", "cremad", "opm")["method"]
    assert (opm["q_base"], opm["p_exe"], opm["lam"]) == (0.4, 0.7, 0.5)
    relearn = cell("balancebench", "ucf101", "relearning")
    assert (relearn["method"]["lam"], relearn["method"]["every"], relearn["method"]["times"]) == (3.0, 15, 2)
    assert relearn_schedule(relearn) == [15]  # ReLearning_trainer.py: epoch % 15 == 0 and epoch > 0, in 30
    assert cell("balancebench", "cremad", "joint")["train"]["train_frames"] == 2  # dataset_config.yaml fps: 2
    assert cell("balancebench", "cremad", "mmpareto")["method"] == {"gamma": 1.5}
    pmr = cell("balancebench", "cremad", "pmr")  # trainer_config.yaml PMR: alpha 0.6, momentum_coef 0.5, 0-80
    assert (pmr["method"]["alpha"], pmr["method"]["momentum"]) == (0.6, 0.5)
    assert [method_of(pmr).active(e) for e in range(30)] == [True] * 30
    agm = cell("balancebench", "cremad", "agm")["method"]  # AGM: alpha 0.1; AGM_trainer.py: clamp 7, clip 5
    assert (agm["alpha"], agm["clamp"], agm["clip_norm"]) == (0.1, 7.0, 5.0)


def test_mmpareto_and_relearning_run_their_codes_settings():
    mmp = cell("mmpareto_icml24", "cremad", "mmpareto")  # MMPareto.py: SGD 2e-3, 50 epochs, scheduler never stepped
    assert mmp["train"]["optimizer"] == {"name": "sgd", "lr": 2e-3, "momentum": 0.9, "weight_decay": 1e-4}
    assert mmp["train"]["scheduler"] == {"name": "none"} and mmp["train"]["epochs"] == 50
    assert mmp["train"]["train_frames"] == 2 and mmp["method"]["gamma"] == 1.5
    rel = cell("relearning_eccv24", "cremad", "relearning")  # ours.py / ours.sh: 90 epochs, after 20, 40, 60
    assert rel["train"]["epochs"] == 90 and rel["train"]["scheduler"] == {"name": "none"}
    assert rel["train"]["frame_augment"] == "none"  # 'my_train' gets the test transform in av_dataset.py
    assert relearn_schedule(rel) == [20, 40, 60] and rel["method"]["match_heldout_size"] is False


def test_embedded_is_unchanged_and_sets_no_method():
    protocol = read_yaml(PARAMS / "protocols" / "embedded.yaml")
    assert "methods" not in protocol and protocol["datasets"] == {"avdigits": {"recipe": "embedded"}}
    assert protocol["train"] == {
        "encoder": "small_cnn",
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        "scheduler": {"name": "cosine"},
        "batch_size": 64,
        "epochs": 16,
        "train_frames": 3,
        "eval_frames": 3,
        "probe_every": 8,
        "num_workers": 0,
        "frame_mean": [0.485, 0.456, 0.406],
        "frame_std": [0.229, 0.224, 0.225],
    }


@pytest.mark.parametrize("protocol, dataset", COVERED)
def test_the_noise_free_ablation_is_ogm_without_the_noise(protocol, dataset):
    ogm, ablation = cell(protocol, dataset, "ogm")["method"], cell(protocol, dataset, "ogm_noise_free")["method"]
    assert ogm["noise"] is True and ablation == ogm | {"noise": False}


def test_the_noise_free_ablation_cannot_be_given_the_noise():
    with pytest.raises(ConfigError, match=r"key 'noise': False was expected"):
        cell("embedded", "avdigits", "ogm_noise_free", sets=("method.noise=true",))
    with pytest.raises(
        ConfigError, match=r"key 'form': 'paper' is not allowed; choose one of \['standard', 'shifted'\]"
    ):
        cell("embedded", "avdigits", "ogm", sets=("method.form=paper",))


def test_every_method_value_says_where_it_comes_from():
    for path in sorted((PARAMS / "methods").glob("*.yaml")):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if re.match(r"^[a-z_]+:\s*\S", line):
                assert "#" in line, f"{path.name}:{n}: {line!r} has no source comment"


# ---- one schedule rule for every method --------------------------------------------------------------


def relearn_schedule(config: dict) -> list[int]:
    """The 0-based epochs after which a Re-learning run of `config` re-learns (what Relearning.build_model sets)."""
    p = config["method"]
    return relearn_epochs(p["every"], p["times"], p["reference_epochs"], config["train"]["epochs"])


def test_scale_epoch_by_hand():
    assert scale_epoch(50, 20, 100) == 10 and scale_epoch(60, 20, 100) == 12 and scale_epoch(6, 20, 100) == 1
    assert scale_epoch(5, 30, 100) == 2 and scale_epoch(15, 30, 100) == 5  # 1.5 and 4.5: half up
    assert scale_epoch(25, 10, 100) == 3 and scale_epoch(35, 10, 100) == 4  # 2.5 and 3.5: never to even
    assert scale_epoch(20, 90, 90) == 20 and scale_epoch(0, 7, 100) == 0
    with pytest.raises(ValueError, match="reference_epochs >= 1"):
        scale_epoch(5, 20, 0)


def test_every_methods_schedule_under_embedded_by_hand():
    """embedded trains 16 epochs: each paper's epoch numbers times 16 / reference_epochs, rounded half up."""
    ogm = method_of(cell("embedded", "avdigits", "ogm"))  # 6 | 0-60 of 100 -> 0.96 -> 1 | 0-9.6 -> 10
    assert (ogm.warmup, ogm.starts, ogm.ends) == (1, 0, 10)
    ogm_ge = method_of(cell("embedded", "avdigits", "ogm_ge"))  # 0 | 0-50 of 100 -> 0 | 0-8
    assert (ogm_ge.warmup, ogm_ge.starts, ogm_ge.ends) == (0, 0, 8)
    assert method_of(cell("embedded", "avdigits", "opm")).warmup == 1  # 6 of 100 -> 1
    # 20, 40, 60 of 90 -> 3.6, 7.1, 10.7 -> 4, 7, 11
    assert relearn_schedule(cell("embedded", "avdigits", "relearning")) == [4, 7, 11]
    pmr = method_of(cell("embedded", "avdigits", "pmr"))  # 0-100 of 150 -> 0-10.7 -> 0-11
    assert (pmr.starts, pmr.ends) == (0, 11)
    agm = method_of(cell("embedded", "avdigits", "agm"))  # 0-100 of 100 -> 0-16: every epoch
    assert (agm.starts, agm.ends) == (0, 16)


def test_a_shortened_paper_protocol_scales_every_method_alike():
    """ogm_cvpr22 cut to 10 epochs (--set train.epochs=10): every schedule shrinks by 10 / its reference."""
    short = ("train.epochs=10",)
    ogm_ge = method_of(cell("ogm_cvpr22", "cremad", "ogm_ge", sets=short))  # 0-50 of 100 -> 0-5
    assert [ogm_ge.active(e) for e in range(10)] == [True] * 6 + [False] * 4
    opm = method_of(cell("ogm_cvpr22", "cremad", "opm", sets=short))  # warm-up 6 of 100 -> 1
    assert [opm.active(e) for e in range(10)] == [False] + [True] * 9
    # Re-learning's 90-epoch schedule: 20, 40, 60 -> 2.2, 4.4, 6.7 -> 2, 4, 7
    assert relearn_schedule(cell("ogm_cvpr22", "cremad", "relearning", sets=short)) == [2, 4, 7]
    bb = method_of(cell("balancebench", "cremad", "ogm", sets=short))  # 10-80 of 30 -> 3.3 -> 3, 26.7 -> 27
    assert (bb.starts, bb.ends) == (3, 27)


def test_no_protocol_carries_a_warm_up_of_its_own():
    """Warm-ups are method parameters (scaled with the rest of each schedule), never an unread protocol key."""
    for protocol in PROTOCOLS:
        spec = read_yaml(PARAMS / "protocols" / f"{protocol}.yaml")
        sections = [spec["train"]] + [d.get("train", {}) for d in spec["datasets"].values()]
        assert not [k for s in sections for k in s if "warmup" in k], protocol


# ---- published numbers name settings bml runs --------------------------------------------------------


def test_published_sources_name_a_protocol_covering_their_datasets_and_bml_methods():
    published = read_yaml(PARAMS / "published.yaml")
    assert {"balancebench", "ogm_ge_cvpr22", "ogm_ge_cvpr22_sum"} <= set(published)
    for sid, source in published.items():
        protocol = read_yaml(PARAMS / "protocols" / f"{source['protocol']}.yaml")
        assert {"title", "fusion", "selection", "seeds", "results"} <= set(source), sid
        for method, per in source["results"].items():
            assert method in METHODS or method in PUBLISHED_TITLES or method.endswith("_only"), (sid, method)
            assert set(per) <= set(protocol["datasets"]), (sid, method, set(per) - set(protocol["datasets"]))
    assert published["balancebench"]["seeds"] == [42] and "test" in published["balancebench"]["selection"]
    assert published["ogm_ge_cvpr22"]["results"]["ogm_ge"]["cremad"]["acc"] == 61.9  # Peng et al., CVPR 2022
    assert published["ogm_ge_cvpr22_sum"]["fusion"] == "sum"


# ---- the reproduction blocks docs/datasets.md tells users to add ------------------------------------------


def test_every_matrix_in_docs_datasets_plans(params_with_roots):
    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    matrices = {}
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        data = yaml.safe_load(textwrap.dedent(block))
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            matrices |= data
    assert set(matrices) == {"cremad", "ks", "vggsound", "ave", "ucf101"}
    for name, blocks in matrices.items():
        plan = load_plan(params_with_roots, {"matrix": name, "matrices": {name: blocks}})
        assert {c.dataset for c in plan.cells} == {b["dataset"] for b in blocks}, name
