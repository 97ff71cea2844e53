"""Provenance records: completeness is enforced when a table is written; files are found."""

import json

import pandas as pd
import pytest

from aiqn.report.provenance import (
    ProvenanceError,
    audit,
    find_cell,
    missing_fields,
    named_files,
    not_applicable,
    resolve,
    table_provenance,
)


def test_a_cell_without_a_complete_record_fails_the_table(tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"dataset": "d", "model": "pixeliqn", "metrics": [],
                                   "provenance": {"checkpoint": not_applicable("x")}}))
    paper = tmp_path / "paper.csv"
    paper.write_text("dataset,model,metric,value,label,source\n")
    table = pd.DataFrame([{"dataset": "d", "model": "pixeliqn", "metric": "FID", "label": "FID (x)", "value": 1.0,
                           "source": "ours", "metrics_file": str(metrics)}])
    with pytest.raises(ProvenanceError, match="m.json.*lacks samples, reference, dataset, config, rule"):
        table_provenance(table, "table1", "table1", str(paper))


def test_missing_fields_accepts_not_applicable():
    record = {key: {"x": 1} for key in ("metrics_file", "samples", "reference", "dataset", "rule", "code",
                                        "environment")}
    record.update(checkpoint=not_applicable("real data"), config=not_applicable("real data"))
    assert missing_fields(record) == []
    assert missing_fields({**record, "code": {}}) == ["code"]


def test_named_files_and_locator(tmp_path):
    record = {"a": {"path": "x", "sha256": "1"}, "b": [{"path": "y", "sha256": "2", "locator": "sklearn:__init__.py"}]}
    found = dict(named_files(record))
    assert set(found) == {"a", "b[0]"}
    assert resolve(found["b[0]"], tmp_path).name == "__init__.py" and resolve(found["b[0]"], tmp_path).exists()
    assert resolve(found["a"], tmp_path) == tmp_path / "x"


def test_audit_without_records_says_what_to_run(tmp_path):
    with pytest.raises(ProvenanceError, match="run the pipeline first"):
        audit(tmp_path / "reports/provenance", tmp_path)


def test_find_cell_by_metric_or_label():
    records = [{"dataset": "d", "model": "m", "metric": "FID", "label": "FID (c, 5 vs 5)"}]
    assert find_cell(records, "m", "FID (c, 5 vs 5)") is records[0]
    assert find_cell(records, "m", "FID", "d") is records[0]


def _complete_metrics(path, seed, value):
    record = {key: {"x": 1} for key in ("checkpoint", "samples", "reference", "dataset", "config", "rule", "code",
                                        "environment")}
    path.write_text(json.dumps({"dataset": "d", "model": "m", "seed": seed, "metrics": [], "provenance": record}))
    return {"dataset": "d", "model": "m", "metric": "FID", "label": "FID (x)", "value": value, "source": "ours",
            "seed": seed, "metrics_file": str(path)}


def test_a_row_with_several_seeds_gets_a_mean_cell_holding_each_seeds_record(tmp_path):
    paper = tmp_path / "paper.csv"
    paper.write_text("dataset,model,metric,value,label,source\n")
    rows = [_complete_metrics(tmp_path / f"s{seed}.json", seed, value) for seed, value in ((0, 2.0), (1, 4.0), (2, 9.0))]
    cells = table_provenance(pd.DataFrame(rows), "table1", "table1", str(paper))
    assert [c["seed"] for c in cells] == [0, 1, 2, "mean"]
    mean = find_cell(cells, "m", "FID")  # the number the rendered table shows
    assert mean["value"] == pytest.approx(5.0) and mean["record"]["over_seeds"] == [0, 1, 2]
    assert [c["record"]["metrics_file"]["path"] for c in mean["record"]["cells"]] == [r["metrics_file"] for r in rows]
    assert sorted(trail for trail, _ in named_files(mean["record"]))[0].startswith("cells[0]")
    assert find_cell(cells, "m", "FID", seed="2")["value"] == 9.0
    with pytest.raises(ProvenanceError, match="seed 7; its seeds: 0, 1, 2, mean"):
        find_cell(cells, "m", "FID", seed=7)
