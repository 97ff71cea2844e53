"""dvc.yaml says what the stage reads and shows: every params section the schema defines (so that changing any
param makes `dvc repro` / `dvc exp run` run the stage, and Snakemake then reruns only what it touches), every
file the DAG reads, and plots whose template and data the pipeline provides."""

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _stage():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["pipeline"]


def test_the_stage_declares_every_params_section_of_the_schema():
    schema = yaml.safe_load((REPO / "schemas/params.schema.yaml").read_text())
    (declared,) = _stage()["params"]
    assert set(declared["params.yaml"]) == set(schema["properties"])


def test_the_stage_depends_on_every_file_the_dag_reads():
    deps = set(_stage()["deps"])
    assert {"Snakefile", "rules", "envs", "schemas", "src/aiqn", "report", "scripts/dvc_stage.sh"} <= deps
    assert {f"paper/{path.name}" for path in (REPO / "paper").glob("*") if path.suffix in (".csv", ".yaml")} <= deps
    assert _stage()["cmd"] == "bash scripts/dvc_stage.sh"


def test_the_plots_use_the_projects_template_on_the_data_plot_data_writes():
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    series = {path: spec for entry in plots if isinstance(entry, dict) for path, spec in entry.items()}
    assert set(series) == {"reports/plots/loss", "reports/plots/fid"}  # aiqn.report.dvc_plots writes both
    assert {spec["template"] for spec in series.values()} == {"series"}
    template = json.loads((REPO / ".dvc/plots/series.json").read_text())
    assert template["data"]["values"] == "<DVC_METRIC_DATA>"
    assert template["encoding"]["color"]["field"] == "series"
    assert "reports/plots" in {next(iter(out)) for out in _stage()["outs"]}
