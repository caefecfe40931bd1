"""The committed reports/summary.json is the report of the matrix params.yaml names: a matrix chosen by an
override (`--config matrix=all`, `make run-all`) reports into reports/<matrix>/, under Snakemake, DVC and
`bml report` alike."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import PARAMS, run

from bml.dvc_stages import stages
from bml.plan import load_plan


def test_only_the_matrix_params_yaml_names_reports_into_reports():
    assert load_plan(PARAMS).layout.report("summary.json") == "reports/summary.json"
    other = load_plan(PARAMS, {"matrix": "all"})
    assert other.layout.report("summary.json") == "reports/all/summary.json"
    assert {"reports/all/summary.json": {"cache": False}} in stages(other)["report"]["metrics"]
    assert load_plan(PARAMS, {"matrix": "default"}).layout.report_dir == "reports"  # the one params.yaml names


@pytest.mark.slow
def test_bml_report_of_another_matrix_leaves_the_committed_summary_alone(tmp_path):
    committed = tmp_path / "reports" / "summary.json"
    committed.parent.mkdir()
    committed.write_text('{"committed": true}\n')
    cmd = [sys.executable, "-m", "bml.cli", "report", "--params-dir", str(PARAMS)]
    run([*cmd, "--overrides", json.dumps({"matrix": "all"})], cwd=tmp_path)
    assert committed.read_text() == '{"committed": true}\n'
    assert (tmp_path / "reports" / "all" / "summary.json").is_file()
    assert (tmp_path / "reports" / "all" / "index.html").is_file()
