"""What DVC and the HTML report read of a finished run: reports/metrics.json (every number of every table,
keyed so that runs line up), the plot data of `dvc plots`, and the per-rule runtime table built from
Snakemake's benchmark files."""

import json

import numpy as np
import pandas as pd
import pytest

from aiqn.report.dvc_plots import write_fid_series, write_loss_series
from aiqn.report.runtime import benchmark_records, forked_records, rule_runtimes, write_runtime_report
from aiqn.report.summary import claims_metrics, metric_keys, metrics_document, table_metrics

COLUMNS = ["dataset", "model", "step", "seed", "final", "metric", "value", "std", "low", "high", "label", "n_samples",
           "extractor", "source", "metrics_file"]


def _row(model, metric, label, value, seed=None, low=np.nan, high=np.nan, std=np.nan, source="ours"):
    return {"dataset": "digits", "model": model, "step": 100, "seed": seed, "final": True, "metric": metric,
            "value": value, "std": std, "low": low, "high": high, "label": label, "n_samples": 100,
            "extractor": "digits-classifier", "source": source, "metrics_file": f"{model}-{seed}.json"}


def _table(n_samples=100):
    fid = f"FID (digits-classifier, {n_samples} samples vs 300 train)"
    rows = [_row("pixeliqn", "FID", fid, v, seed=s) for s, v in enumerate([10.0, 12.0, 14.0])]
    rows += [_row("agave", "bits/dim", "bits/dim, eq. 7 bound (digits test split, 1 z per image)", 3.5 + s, seed=s)
             for s in range(2)]
    rows += [_row("agave", "bits/dim", "bits/dim, importance-sampled bound (digits test split, K=4)", 3.0 + s, seed=s)
             for s in range(2)]
    rows.append(_row("real data (test split)", "IS", "IS (digits-classifier, 100 samples, 5 splits)", 9.0, std=0.2))
    rows.append(_row("PixelIQN", "FID", "FID (CIFAR-10)", 49.46, source="paper: Ostrovski et al. 2018"))
    return pd.DataFrame(rows, columns=COLUMNS)


def test_metrics_hold_every_cell_of_our_rows_by_metric_with_its_interval():
    summary = table_metrics(_table())
    import scipy.stats

    low, high = scipy.stats.t.interval(0.95, 2, loc=12.0, scale=scipy.stats.sem([10.0, 12.0, 14.0]))
    assert summary["digits"]["pixeliqn"]["FID"] == pytest.approx({"value": 12.0, "low": low, "high": high,
                                                                  "std": 2.0, "seeds": 3}, abs=1e-6)
    # two labels of one metric: each keyed by its label up to " (", so neither overwrites the other
    assert set(summary["digits"]["agave"]) == {"bits/dim, eq. 7 bound", "bits/dim, importance-sampled bound"}
    assert summary["digits"]["agave"]["bits/dim, eq. 7 bound"]["value"] == pytest.approx(4.0)
    # a row with one seed keeps its own spread; the paper's rows are not ours
    assert summary["digits"]["real data (test split)"]["IS"] == {"value": 9.0, "std": 0.2, "seeds": 0}
    assert "PixelIQN" not in summary["digits"]


def test_metric_keys_do_not_move_when_a_sample_count_changes():
    """`dvc metrics diff` lines two runs up by key: a label that names the sample count must not be the key."""
    assert table_metrics(_table(100)).keys() == table_metrics(_table(200)).keys()
    assert table_metrics(_table(100))["digits"]["pixeliqn"].keys() == table_metrics(_table(200))["digits"]["pixeliqn"].keys()
    rows = pd.DataFrame({"metric": ["x", "x"], "label": ["x (a)", "x (b)"]})  # the prefixes collide: full labels
    assert metric_keys(rows) == ["x (a)", "x (b)"]


def test_claims_keep_their_numbers_and_verdicts_per_claim_and_dataset():
    claims = pd.DataFrame([{"claim": "aiqn-fid", "dataset": "digits", "ours_a": 52.9, "ours_b": 41.4, "difference": 11.5,
                            "difference_low": 3.4, "difference_high": 19.5, "kid_difference": np.nan, "kid_low": np.nan,
                            "kid_high": np.nan, "memorised_a": 0.0, "memorised_b": 0.01, "verdict": "reversed",
                            "kid_verdict": np.nan, "statement": "PixelIQN has a lower FID"}])
    cell = claims_metrics(claims)["aiqn-fid"]["digits"]
    assert cell == {"ours_a": 52.9, "ours_b": 41.4, "difference": 11.5, "difference_low": 3.4, "difference_high": 19.5,
                    "memorised_a": 0.0, "memorised_b": 0.01, "verdict": "reversed"}


def test_the_metrics_document_has_a_section_per_table_and_the_claims(tmp_path):
    _table().to_csv(tmp_path / "table1.csv", index=False)
    pd.DataFrame([{"claim": "c", "dataset": "digits", "difference": 1.0, "verdict": "holds"}]).to_csv(
        tmp_path / "claims.csv", index=False)
    document = metrics_document({"table1": str(tmp_path / "table1.csv")}, str(tmp_path / "claims.csv"))
    assert list(document) == ["table1", "claims"]
    assert json.loads(json.dumps(document)) == document  # plain JSON: no NaN, no numpy types


def _benchmark(path, wall, cpu, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{wall}\t0:00:01\t{rss}\t1.0\t1.0\t1.0\t0.0\t0.0\t50.0\t{cpu}\n")


def test_runtimes_sum_each_rules_jobs_and_keep_the_largest_memory(tmp_path):
    root = tmp_path / "logs/benchmarks"
    _benchmark(root / "train_digits_pixelcnn/0.tsv", 100.0, 90.0, 500.0)
    _benchmark(root / "train_digits_pixelcnn/1.tsv", 110.0, 95.0, 520.0)
    _benchmark(root / "sweep_trial/digits/pixeliqn/0/t000.tsv", 5.0, 4.0, 300.0)
    _benchmark(root / "table1.tsv", 2.0, 1.5, "NA")  # too short for Snakemake to sample memory
    table = rule_runtimes(benchmark_records(root)).set_index("rule")
    assert list(table.index) == ["train_digits_pixelcnn", "sweep_trial", "table1"]  # the slowest first
    assert table.loc["train_digits_pixelcnn", ["jobs", "wall_s", "cpu_s", "peak_rss_mb"]].tolist() == [2, 210.0, 185.0,
                                                                                                        520.0]
    assert np.isnan(table.loc["table1", "peak_rss_mb"])
    assert table["wall_share"].sum() == pytest.approx(1.0)
    written = write_runtime_report(str(root), str(tmp_path / "r.csv"), str(tmp_path / "r.md"), str(tmp_path / "r.png"))
    assert len(written) == 3 and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "4 jobs of 3 rule(s): 217 s of wall time" in (tmp_path / "r.md").read_text()


def test_the_fork_servers_exact_figures_replace_the_sampled_ones_of_its_rules(tmp_path):
    """Jobs run in the fork server: their rule's CPU and memory come from logs/forkserver.tsv (the latest row
    per log file), matched to the rule by its `log:` pattern; a rule without rows keeps Snakemake's samples."""
    root = tmp_path / "logs/benchmarks"
    _benchmark(root / "train_digits_pixelcnn/0.tsv", 100.0, 0.1, 15.0)  # the client's own figures
    _benchmark(root / "train_digits_pixelcnn/1.tsv", 110.0, 0.1, 15.0)
    _benchmark(root / "table1.tsv", 2.0, 1.5, 300.0)
    job_log = tmp_path / "logs/forkserver.tsv"
    job_log.write_text("verb\tlog\twall_s\tuser_s\tsystem_s\tmax_rss_mb\texit\n"
                       "train\tlogs/train/digits/pixelcnn/seed-0.log\t50\t40.0\t1.0\t480.0\t-9\n"  # killed, rerun below
                       "train\tlogs/train/digits/pixelcnn/seed-0.log\t99\t90.0\t2.0\t500.0\t0\n"
                       "train\tlogs/train/digits/pixelcnn/seed-1.log\t109\t100.0\t3.0\t520.0\t0\n"
                       "help\t-\t0.1\t0.05\t0.05\t260.0\t0\n")
    patterns = {"train_digits_pixelcnn": "logs/train/{dataset,[a-z0-9]+}/pixelcnn/seed-{seed}.log",
                "table1": "logs/report/table1.log"}
    forked = forked_records(job_log, patterns)
    assert forked["rule"].tolist() == ["train_digits_pixelcnn"] * 2 and forked["cpu_s"].tolist() == [92.0, 103.0]
    table = rule_runtimes(benchmark_records(root), forked).set_index("rule")
    assert table.loc["train_digits_pixelcnn", ["cpu_s", "peak_rss_mb", "cpu_from"]].tolist() == [195.0, 520.0, "wait4"]
    assert table.loc["table1", ["cpu_s", "peak_rss_mb", "cpu_from"]].tolist() == [1.5, 300.0, "sampled"]
    write_runtime_report(str(root), str(tmp_path / "r.csv"), str(tmp_path / "r.md"), str(tmp_path / "r.png"),
                         job_log=str(job_log), log_patterns=patterns)
    assert "For the 1 rule(s) whose `CPU from` says wait4" in (tmp_path / "r.md").read_text()


def test_a_runtime_report_without_benchmarks_says_so_and_a_foreign_file_is_named(tmp_path):
    """A checkout DVC restored ran no job: its report is empty and says why."""
    table = write_runtime_report(str(tmp_path / "none"), str(tmp_path / "a.csv"), str(tmp_path / "a.md"),
                                 str(tmp_path / "a.png"))
    assert table.empty and "no job ran in this checkout" in (tmp_path / "a.md").read_text()
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match=r"x\.tsv: not a Snakemake benchmark file"):
        benchmark_records(tmp_path)


def test_plot_data_stacks_seeds_per_run_and_models_per_dataset(tmp_path):
    logs = {}
    for seed in (0, 1):
        path = tmp_path / f"log{seed}.csv"
        pd.DataFrame({"step": [1, 2], "loss": [3.0 + seed, 2.0 + seed], "lr": [1e-3, 1e-3]}).to_csv(path, index=False)
        logs[f"digits/pixelcnn/seed-{seed}"] = str(path)
    out = tmp_path / "plots"
    (loss_file,) = write_loss_series(logs, out)
    loss = pd.read_csv(loss_file)
    assert loss_file == out / "loss/digits_pixelcnn.csv"
    assert loss.to_dict("list") == {"step": [1, 2, 1, 2], "loss": [3.0, 2.0, 4.0, 3.0],
                                    "series": ["seed-0", "seed-0", "seed-1", "seed-1"]}
    with pytest.raises(ValueError, match="<dataset>/<run>/<series>"):
        write_loss_series({"digits/pixelcnn": str(tmp_path / "log0.csv")}, out)

    metrics = []
    for seed in (0, 1):
        for step in (50, 150):
            path = tmp_path / f"m{seed}_{step}.json"
            path.write_text(json.dumps({"dataset": "digits", "model": "pixeliqn", "step": step, "seed": seed,
                                        "metrics": [{"metric": "FID", "value": step / 10 + seed},
                                                    {"metric": "IS", "value": 2.0}]}))
            metrics.append(str(path))
    floor = tmp_path / "real.json"
    floor.write_text(json.dumps({"dataset": "digits", "model": "real data (test split)",
                                 "metrics": [{"metric": "FID", "value": 1.0}]}))
    (fid_file,) = write_fid_series(metrics + [str(floor)], out)
    fid = pd.read_csv(fid_file)
    assert fid.to_dict("list") == {"step": [50, 150, 50, 150], "FID": [5.0, 15.0, 6.0, 16.0],
                                   "series": ["pixeliqn seed-0"] * 2 + ["pixeliqn seed-1"] * 2}
