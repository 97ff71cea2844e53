"""The whole Snakemake pipeline at the `profiles/ci` size, in a temporary copy of the repo:
prepare -> train (both models) -> sample -> evaluate -> Table 1 and figures; then a second
invocation has nothing to do; a run killed mid-training resumes to the same bytes (the run itself is the
session's `ci_run`, tests/conftest.py). Also: every
kind of malformed params.yaml is refused naming the key or the line."""

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from aiqn.report.tables import over_seeds

from repo_copy import REPO, copy_environment, copy_repo, snakemake


@pytest.mark.slow
def test_ci_pipeline_writes_table1_and_figures(ci_run):
    table = pd.read_csv(ci_run / "reports/tables/table1.csv")
    ours = table[table.source == "ours"]
    models = {"pixelcnn", "pixeliqn", "pixelcnn_cond", "pixeliqn_cond"}
    assert set(ours.model) == models | {f"{m} (chosen on validation)" for m in models} | {"real data (test split)"}
    for model in models:  # each seed's checkpoint with the lowest FID vs val, among every checkpoint it scored
        for seed in (0, 1):
            by_step = {}
            for path in (ci_run / "results/metrics/digits" / model / f"seed-{seed}").glob("[0-9]*[0-9].json"):
                doc = json.loads(path.read_text())
                (val,) = [m for m in doc["metrics"] if m["metric"] == "FID vs val"]
                assert val["label"] == "FID (digits-classifier, 100 samples vs 216 val)"
                by_step[doc["step"]] = val["value"]
            chosen = digits_rows(ours, f"{model} (chosen on validation)", "FID vs val")
            assert chosen[chosen.seed == seed].step.item() == min(by_step, key=by_step.get)
    for model in ("pixelcnn", "pixeliqn", "pixelcnn_cond", "pixeliqn_cond"):
        rows = ours[ours.model == model]
        assert {"FID", "IS"} <= set(rows.metric)
        assert rows.value.notna().all() and (rows[rows.metric == "FID"].value >= 0).all()
        assert rows.label.str.contains("digits-classifier").any()
    assert "bits/dim" in set(ours[ours.model == "pixelcnn"].metric)
    # the N-vs-N metrics and the memorisation check: the floor shares the models' columns (labels)
    digits = ours[ours.dataset == "digits"]
    for metric in ("FID vs train", "FID vs test", "KID vs train", "KID vs test", "memorised (pixels)",
                   "memorised (features)"):
        (label,) = set(digits[digits.metric == metric].label)  # one column, floor included
        assert metric.startswith("memorised") or "100 vs 100" in label
        assert set(digits[digits.metric == metric].model) == set(digits.model)
    claims = pd.read_csv(ci_run / "reports/tables/claims.csv")  # every claim tested, with a verdict by the rule
    assert {"aiqn-fid", "cqf-fid", "agave-bpd", "aiqn-vae-fid"} <= set(claims.claim)
    assert set(claims.verdict) <= {"holds", "reversed", "inconclusive"}
    assert "Verdict rule" in (ci_run / "reports/tables/claims.md").read_text()
    # run.seeds [0, 1]: every model's row once per seed in the long CSV, the claims' intervals over seeds
    for model in ("pixelcnn", "pixeliqn", "pixelcnn_cond", "pixeliqn_cond"):
        assert sorted(digits_rows(ours, model, "FID").seed) == [0, 1]
    aiqn_fid = claims[(claims.claim == "aiqn-fid") & (claims.dataset == "digits")].iloc[0]
    assert aiqn_fid.noise == "2 seeds" and len(eval(aiqn_fid.ours_a_per_seed)) == 2
    for claim in ("cqf-fid", "cqf-bpd", "agave-bpd", "aiqn-vae-fid"):  # the methods' rows: over seeds too
        assert (claims[claims.claim == claim].noise == "2 seeds").all(), claim
    for name in ("aiqn_vae", "cqf_table1", "agave_table1"):
        rows = pd.read_csv(ci_run / f"reports/tables/{name}.csv")
        ours_rows = rows[(rows.source == "ours") & ~rows.model.str.startswith("real data")]
        per_row_seeds = ours_rows.groupby(["model", "label"]).seed.apply(sorted)
        assert len(per_row_seeds) and all(seeds == [0, 1] for seeds in per_row_seeds), name
    main_fid = digits[digits.metric == "FID"]
    assert (main_fid.low < main_fid.high).all() and "real data (test split)" not in set(main_fid.model)
    colour = ours[ours.dataset == "photos32"]  # the 32x32x3, 256-level path of both models
    assert {"pixelcnn", "pixeliqn"} <= set(colour.model) and colour[~colour.metric.isin(["bits/dim", "memorised (pixels)"])].label.str.contains("photos32-classifier").all()
    with __import__("numpy").load(ci_run / "results/samples/photos32/pixeliqn/seed-0/0000150.npz") as arrays:
        assert arrays["images"].shape == (100, 3, 32, 32) and arrays["images"].dtype == "uint8"
    tiles = ours[ours.dataset == "photos8"]  # the natural-image testbed: 8x8x3 at 256 levels, its own classifier
    assert set(tiles.model) >= {"pixelcnn", "pixeliqn"} and tiles[tiles.metric == "FID"].label.str.contains("photos8-classifier").all()
    accuracy = json.loads((ci_run / "results/extractors/photos8/classifier.json").read_text())
    assert accuracy["test_accuracy"] > 0.5  # nine photos: chance is 0.11
    assert table.source.str.startswith("paper").any()
    for figure in ("digits_samples.png", "digits_training_curves.png", "digits_loss.png",
                   "digits_pixeliqn_cond_classes.png", "photos32_pixeliqn_cond_classes.png",
                   "digits_memorisation.png", "photos32_memorisation.png"):
        assert (ci_run / "reports/figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (ci_run / "reports/tables/table1.md").read_text()
    assert "Paper" in md and "Ours" in md
    metrics = json.loads((ci_run / "results/metrics/digits/pixeliqn/seed-1/0000150.json").read_text())
    assert metrics["final"] and metrics["n_samples"] == 100 and metrics["seed"] == 1
    with __import__("numpy").load(ci_run / "results/samples/digits/pixeliqn_cond/seed-0/0000150.npz") as arrays:
        assert set(arrays["labels"].tolist()) == set(range(10))  # PixelIQN*: labels drawn uniformly
    for seed in (0, 1):  # every seed's checkpoints are evaluated (Figure 4)
        for step in ("0000050", "0000150"):
            assert (ci_run / f"results/metrics/digits/pixelcnn/seed-{seed}/{step}.json").exists()
    for log in ("logs/train/digits/pixelcnn/seed-0.log", "logs/score/digits/pixeliqn/seed-1.log"):
        assert (ci_run / log).stat().st_size > 0


@pytest.mark.slow
def test_ci_run_summarises_every_table_for_dvc_and_where_its_time_went(ci_run):
    summary = json.loads((ci_run / "reports/metrics.json").read_text())
    assert set(summary) == {"table1", "aiqn_vae", "agave_table1", "cqf_table1", "claims"}
    table = pd.read_csv(ci_run / "reports/tables/table1.csv")
    fid = over_seeds(table[(table.source == "ours") & (table.dataset == "digits") & (table.metric == "FID")])
    for row in fid.itertuples():  # metrics.json holds the rendered table's numbers
        assert summary["table1"]["digits"][row.model]["FID"]["value"] == pytest.approx(row.value, abs=1e-5)
    assert set(summary["claims"]["aiqn-fid"]) == {"digits", "photos32", "photos8"}
    for name in ("aiqn_vae", "cqf_table1", "agave_table1"):
        assert summary[name]["digits"], name
    # the data of `dvc plots`: a loss file per model and method run, an FID file per dataset
    loss = {path.name for path in (ci_run / "reports/plots/loss").glob("*.csv")}
    assert {"digits_pixelcnn.csv", "photos32_pixeliqn_cond.csv", "digits_vae-aiqn-vae.csv", "digits_agave-lambda2.csv",
            "digits_agave-ablation.csv", "digits_cqf-gan.csv"} <= loss
    fid_curves = pd.read_csv(ci_run / "reports/plots/fid/digits.csv")
    assert sorted(set(fid_curves.step)) == [50, 150] and "pixeliqn seed-1" in set(fid_curves.series)
    # every job that ran a command left a benchmark file; the runtime report sums them per rule
    runtime = pd.read_csv(ci_run / "reports/runtime/rules.csv").set_index("rule")
    assert runtime.loc["train_digits_pixelcnn", "jobs"] == 2 and runtime.loc["sweep_trial", "jobs"] == 8
    assert runtime.loc["score_cqf", "jobs"] == runtime.loc["score_vae", "jobs"] == runtime.loc["evaluate_agave", "jobs"] == 2  # a job per seed
    assert (runtime["wall_s"] > 0).all() and (runtime.loc["train_digits_pixelcnn", "peak_rss_mb"] > 50)
    assert {"prepare_data", "score_photos32_pixeliqn", "score_cqf", "score_vae", "evaluate_agave", "claims", "metrics"} <= set(runtime.index)


def test_every_rule_that_runs_a_command_has_a_benchmark_and_names_its_software():
    """Parsed from the rules files: a rule with `shell:` has `benchmark:` under logs/benchmarks/<rule> and
    `conda:` (runtime_report, which reads the benchmark files, has none of its own)."""
    blocks = re.split(r"\n(?=\s*(?:rule|checkpoint)\b[^\n]*:\n)", "\n".join(
        path.read_text() for path in sorted((REPO / "rules").glob("*.smk"))))
    checked = 0
    for block in blocks:
        if "shell:" not in block:
            continue
        name = re.search(r"(?:rule|checkpoint) ?(\w*):\n(?:\s*name:\n\s*(.+)\n)?", block)
        label = name.group(1) or name.group(2)
        assert "conda:\n" in block and '"../envs/aiqn.yaml"' in block, label
        if label != "runtime_report":
            assert re.search(r"benchmark:\n\s*f?\"logs/benchmarks/", block), label
        checked += 1
    assert checked >= 38


def digits_rows(ours, model, metric):
    return ours[(ours.dataset == "digits") & (ours.model == model) & (ours.metric == metric)]


@pytest.mark.slow
def test_second_invocation_has_nothing_to_do(ci_run):
    result = snakemake(ci_run, "--profile", "profiles/ci", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def _set(path: str, value):
    """A params edit: set the dotted `path` (created where missing) to `value`; DELETE removes it."""
    def edit(params):
        *parents, leaf = path.split(".")
        for key in parents:
            params = params.setdefault(key, {})
        if value is DELETE:
            del params[leaf]
        else:
            params[leaf] = value
    return edit


DELETE = object()
OVERLAY = "overlay.yaml"
# Malformed params (issue 17, item 4), in two tables. SCHEMA_CASES break schemas/params.schema.yaml,
# which the Snakefile checks with snakemake.utils.validate on every parse: they are checked in one
# process through that same call (a dry run costs ~5 s of start-up each), and the first of them also
# through a real dry run in PARSE_CASES. (what is wrong, dotted key, value, what the error says)
SCHEMA_CASES = [
    ("a string for a count", "sampling.n_samples", "many", "'many' is not of type 'integer'"),
    ("a zero count", "sampling.n_samples", 0, "0 is less than the minimum of 1"),
    ("negative steps", "models.pixelcnn.train.steps", -5, "-5 is less than the minimum of 1"),
    ("zero steps", "models.pixelcnn.train.steps", 0, "0 is less than the minimum of 1"),
    ("a negative kappa", "models.pixeliqn.train.kappa", -0.1, "-0.1 is less than the minimum of 0"),
    ("a negative count in evaluation", "evaluation.bootstrap", -1, "-1 is less than the minimum of 0"),
    ("an unknown top-level key", "smapling", {"n_samples": 10}, "('smapling' was unexpected)"),
    ("an unknown key in run", "run.seedz", [0], "('seedz' was unexpected)"),
    ("an unknown key in a model's train section", "models.pixeliqn.train.kapa", 0.01, "('kapa' was unexpected)"),
    ("an unknown key in a model's network", "models.pixelcnn.architecture.filtr_size", 5,
     "('filtr_size' was unexpected)"),
    ("an unknown sampling method", "sampling.method", "magic", "'magic' is not one of ['cached', 'naive']"),
    ("a string for a list", "run.seeds", "0,1", "'0,1' is not of type 'array'"),
    ("a list of the wrong type", "run.seeds", ["a"], "'a' is not of type 'integer'"),
    ("a missing section", "sampling", DELETE, "'sampling' is a required property"),
]


def _instance(key: str, message: str) -> str:
    """Where jsonschema's message says the error is: the key itself, or its parent for a key that
    should not be there or is missing."""
    parts = key.split(".")
    if "was unexpected" in message or "required property" in message:
        parts = parts[:-1]
    return "On instance" + "".join(f"[{part!r}]" for part in parts)


@pytest.mark.parametrize("key, value, expected", [case[1:] for case in SCHEMA_CASES],
                         ids=[case[0] for case in SCHEMA_CASES])
def test_params_breaking_the_schema_are_refused_naming_the_key(key, value, expected):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _set(key, value)(params)
    with pytest.raises(WorkflowError) as refused:
        validate(params, str(REPO / "schemas/params.schema.yaml"))  # what the Snakefile calls
    message = str(refused.value)
    assert expected in message and _instance(key, message) in message, message


# (what is wrong, an edit of params.yaml or the file's text, an overlay, what the error must say)
PARSE_CASES = [
    ("a string for a count (the schema, end to end)", _set("sampling.n_samples", "many"), None,
     r"'many' is not of type 'integer'.*On instance\['sampling'\]\['n_samples'\]"),
    ("an unknown key in a dataset entry", _set("datasets.digits.test_fractoin", 0.2), None,
     r"datasets.digits.test_fractoin is not an option of digits \(it takes: test_fraction, split_seed"),
    ("a model the run lists but models lacks", _set("run.models", ["pixelrnn"]), None,
     r"the run lists model 'pixelrnn' on digits but models.pixelrnn is missing"),
    ("an unregistered dataset", lambda p: (_set("datasets.tinydigits", {"test_fraction": 0.2, "split_seed": 0})(p),
                                           _set("run.datasets", ["tinydigits"])(p)), None,
     r"dataset 'tinydigits' is not registered \(registered: .*digits, "),
    ("a YAML syntax error", "run:\n  datasets: [digits\nsampling: {n_samples: 10}\n", None,
     r"params.yaml: line \d+, column \d+: YAML syntax error"),
    ("an empty file", "", None, r"params.yaml is empty"),
    ("a list, not a mapping", "- digits\n- photos32\n", None, r"params.yaml holds a list, not a mapping"),
    ("a profile overlay with an unknown key", None, {"run": {"datasetz": ["digits"]}},
     r"\('datasetz' was unexpected\).*On instance\['run'\]"),
    ("a profile overlay with a negative count", None, {"evaluation": {"bootstrap": -1}},
     r"-1 is less than the minimum of 0.*On instance\['evaluation'\]\['bootstrap'\]"),
]


@pytest.mark.parametrize("edit, overlay, expected", [case[1:] for case in PARSE_CASES],
                         ids=[case[0] for case in PARSE_CASES])
def test_malformed_params_stop_the_dry_run_naming_the_key_or_the_line(tmp_path, edit, overlay, expected):
    """What only the Snakefile's own checks refuse (or a file Snakemake cannot read) stops the dry run
    before any job is planned, with the key, the value or the file's line in the message."""
    repo = copy_repo(tmp_path)
    if isinstance(edit, str):
        (repo / "params.yaml").write_text(edit)
    elif edit is not None:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        edit(params)
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
    extra = []
    if overlay is not None:
        (repo / OVERLAY).write_text(yaml.safe_dump(overlay))
        extra = ["--configfile", OVERLAY]
    result = snakemake(repo, "--cores", "1", "--dry-run", *extra, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "prepare_data" not in out, out[-2000:]
    assert re.search(expected, out, re.DOTALL), out[-2000:]


def aiqn(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    return subprocess.run([sys.executable, "-m", "aiqn", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_every_table1_cell_has_a_complete_provenance_record(ci_run):
    cells = json.loads((ci_run / "reports/provenance/table1.json").read_text())
    table = pd.read_csv(ci_run / "reports/tables/table1.csv")
    seeded = table[table.seed.notna()].groupby(["dataset", "model", "label"]).ngroups  # a mean cell per row
    assert len(cells) == len(table) + seeded
    ours = [c for c in cells if c["source"] == "ours" and c["seed"] != "mean"]
    for cell in ours:
        record = cell["record"]
        for key in ("metrics_file", "checkpoint", "samples", "reference", "dataset", "config", "rule", "code",
                    "environment", "table_rule"):
            assert record.get(key), (cell["model"], cell["label"], key)
    iqn = next(c for c in ours if c["model"] == "pixeliqn" and c["metric"] == "FID" and c["seed"] == 1)["record"]
    assert iqn["checkpoint"]["path"] == "results/runs/digits/pixeliqn/seed-1/ckpt_0000150.pt"
    assert iqn["checkpoint"]["weights"] == "ema" and iqn["checkpoint"]["step"] == 150
    assert iqn["samples"]["n"] == 100 and iqn["samples"]["seed"] == 1
    assert iqn["reference"]["n"] == 300 and iqn["reference"]["extractor"] == "digits-classifier"
    assert iqn["config"]["model"]["head"] == "quantile" and iqn["config"]["train"]["steps"] == 150
    assert iqn["config"]["train"]["seed"] == 1
    assert iqn["rule"] == {"name": "score_digits_pixeliqn", "wildcards": {"dataset": "digits", "model": "pixeliqn",
                                                                          "seed": "1", "step": "0000150"}}
    assert iqn["dataset"]["raw"][0]["locator"] == "sklearn:datasets/data/digits.csv.gz"
    assert set(iqn["environment"]["packages"]) >= {"torch", "snakemake", "dvc"}
    real = next(c for c in ours if c["model"].startswith("real data"))["record"]
    assert real["checkpoint"] == {"not_applicable": "real data"}


@pytest.mark.slow
def test_provenance_command_prints_the_chain(ci_run):
    result = aiqn(ci_run, "provenance", "table1", "--row", "pixeliqn", "--metric", "FID", "--dataset", "digits")
    assert result.returncode == 0, result.stderr
    for expected in ("mean over seeds [0, 1]", "results/runs/digits/pixeliqn/seed-0/ckpt_0000150.pt",
                     "results/runs/digits/pixeliqn/seed-1/ckpt_0000150.pt", "results/samples/digits/pixeliqn/seed-1/0000150.npz",
                     "training seed 1", "step 150, ema weights", "digits-classifier", "score_digits_pixeliqn", "git "):
        assert expected in result.stdout
    one = aiqn(ci_run, "provenance", "table1", "--row", "pixeliqn", "--metric", "FID", "--dataset", "digits", "--seed", "1")
    assert "seed-1/ckpt_0000150.pt" in one.stdout and "seed-0/" not in one.stdout
    as_json = aiqn(ci_run, "provenance", "table1", "--row", "pixelcnn", "--metric", "bits/dim", "--dataset", "digits",
                   "--json")
    mean_cell = json.loads(as_json.stdout)  # the mean over seeds holds each seed's own cell
    assert mean_cell["record"]["over_seeds"] == [0, 1]
    assert [c["record"]["config"]["model"]["head"] for c in mean_cell["record"]["cells"]] == ["categorical"] * 2
    paper = aiqn(ci_run, "provenance", "table1", "--row", "PixelIQN", "--metric", "FID", "--dataset", "cifar10")
    assert "paper/aiqn_table1.csv" in paper.stdout


@pytest.mark.slow
def test_audit_passes_then_names_every_tampered_file(ci_run, tmp_path):
    assert aiqn(ci_run, "audit").returncode == 0
    copy = tmp_path / "copy"
    shutil.copytree(ci_run, copy, ignore=shutil.ignore_patterns(".snakemake", "state"))
    metrics = copy / "results/metrics/digits/pixelcnn/seed-0/0000150.json"
    metrics.write_text(metrics.read_text().replace('"final": true', '"final": true '))  # rewritten metrics file
    (copy / "results/runs/digits/pixeliqn/seed-1/ckpt_0000150.pt").unlink()  # a lost checkpoint
    result = aiqn(copy, "audit")
    assert result.returncode == 1
    assert "results/metrics/digits/pixelcnn/seed-0/0000150.json changed" in result.stdout
    assert "results/runs/digits/pixeliqn/seed-1/ckpt_0000150.pt is missing" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expected",
    [
        (("provenance", "table9", "--row", "pixeliqn", "--metric", "FID"), "table1"),
        (("provenance", "table1", "--row", "pixeliqn", "--metric", "KID"), "metrics: FID, FID vs test, FID vs train, FID vs val, IS, KID vs test"),
        (("provenance", "table1", "--row", "pixeliqn", "--metric", "FID"), "give --dataset (one of digits, photos32, photos8)"),
        (("provenance", "table1", "--row", "pixelsnail", "--metric", "FID"), "rows: "),
        (("provenance", "table1", "--row", "PixelIQN", "--metric", "FID"), "give --dataset"),
    ],
)
def test_bad_provenance_queries_get_one_line_errors(ci_run, args, expected):
    result = aiqn(ci_run, *args)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_snakemake_report_has_every_table_and_figure_with_captions(ci_run):
    result = snakemake(ci_run, "--profile", "profiles/ci", "--report", "reports/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (ci_run / "reports/report.html").read_text()
    for name in ("table1.csv", "digits_samples.png", "digits_training_curves.png", "digits_loss.png", "rules.csv",
                 "rules.png"):  # rules.*: the runtime report (time and memory per rule)
        assert name in html
    assert "FID (digits-classifier, 100 samples vs 300 train)" in html  # the label that applies, from params
    assert "IS (digits-classifier, 100 samples, 5 splits)" in html
    assert "Table 1 analogue in long form" in html and "Figure 4 analogue" in html


def run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    return result


@pytest.mark.slow
def test_dvc_round_trip_restores_a_run_that_needs_nothing_redone(ci_run, tmp_path):
    """push after a run; a fresh clone pulls data, checkpoints, samples, metrics, reports and
    provenance, `snakemake -n` has nothing to do and the audit passes."""
    origin, remote, clone = tmp_path / "origin", tmp_path / "remote", tmp_path / "clone"
    shutil.copytree(ci_run, origin, ignore=shutil.ignore_patterns(".snakemake", "__pycache__"))
    run(origin, "git", "init", "-q")
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "code")
    run(origin, "dvc", "commit", "--force", "--quiet")  # record the outputs of the run in dvc.lock
    run(origin, "dvc", "remote", "add", "--default", "local", str(remote))
    run(origin, "dvc", "push", "--quiet")
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "results")
    tracked = run(origin, "git", "ls-files").stdout.split()
    assert not [f for f in tracked if f.startswith(("results/", "data/processed/", "reports/"))], "outputs are DVC's"

    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "results").exists()
    restored = run(clone, "bash", "scripts/restore.sh", "--profile", "profiles/ci")
    assert "audit: " in restored.stdout and ", 0 mismatches" in restored.stdout
    for path in ("results/runs/digits/pixeliqn/seed-1/ckpt_0000150.pt", "results/samples/digits/pixelcnn/seed-0/0000150.npz",
                 "results/metrics/digits/pixeliqn/seed-1/0000150.json", "reports/tables/table1.csv",
                 "reports/figures/digits_samples.png", "reports/provenance/table1.json", "data/processed/digits/train.npz"):
        assert (clone / path).exists(), path
    dry = snakemake(clone, "--profile", "profiles/ci", "--dry-run")
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_a_dvc_experiment_reruns_only_what_its_param_touches_and_metrics_diff_shows_it(ci_run, tmp_path):
    """The CI run as a DVC project (params.yaml overlaid with the CI profile's, as docs/experiments.md says):
    `dvc exp run -S agave.evaluation.importance_k=3` re-scores AGAVE's importance-sampled bound and nothing
    trains again; `dvc metrics diff` lines the two runs up under the same keys although the label's K
    changed; `dvc exp run --temp` is refused with a message."""
    repo = tmp_path / "exp"
    shutil.copytree(ci_run, repo, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))  # with state/, .snakemake/
    run(repo, sys.executable, "scripts/profile_params.py", "profiles/ci/params.yaml")
    run(repo, "git", "init", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "code")
    run(repo, "dvc", "commit", "--force", "--quiet")
    run(repo, "git", "add", "dvc.lock")
    run(repo, "git", "commit", "-qm", "results")
    checkpoint = repo / "results/runs/digits/pixelcnn/seed-0/ckpt_0000150.pt"
    trained = checkpoint.stat().st_mtime_ns

    result = run(repo, "dvc", "exp", "run", "-S", "agave.evaluation.importance_k=3")
    stats = result.stdout + result.stderr
    ran = set(re.findall(r"^(\w+)\s+\d+$", stats[stats.index("Job stats:"):], flags=re.M))
    assert {"evaluate_agave", "agave_table1", "metrics"} <= ran, stats[-3000:]
    assert not {name for name in ran if name.startswith(("train", "score", "sweep"))}, ran  # nothing else reruns
    assert checkpoint.stat().st_mtime_ns == trained

    diff = json.loads(run(repo, "dvc", "metrics", "diff", "--json").stdout)["reports/metrics.json"]
    changed = {key for key, entry in diff.items() if entry.get("diff")}
    bound = "agave_table1.digits.AGAVE (lambda=2).bits/dim, importance-sampled bound.value"
    assert bound in changed, sorted(changed)[:20]  # the same key at K=4 and K=3
    assert not [key for key in changed if key.startswith(("table1.", "cqf_table1.", "aiqn_vae."))]
    params = json.loads(run(repo, "dvc", "params", "diff", "--json").stdout)["params.yaml"]
    assert {key: (entry["old"], entry["new"]) for key, entry in params.items()} == {"agave.evaluation.importance_k": (4, 3)}

    plots = json.loads(run(repo, "dvc", "plots", "show", "--json").stdout)  # dvc.yaml's plots, with the template
    assert not plots.get("errors") and {"reports/plots/fid/digits.csv", "reports/plots/loss/digits_pixeliqn.csv"} <= set(plots["data"])
    (fid_plot,) = plots["data"]["reports/plots/fid/digits.csv"]
    assert fid_plot["content"]["encoding"]["color"]["field"] == "series"

    temp = subprocess.run(["dvc", "exp", "run", "--temp", "-S", "agave.evaluation.importance_k=2"], cwd=repo,
                          capture_output=True, text=True, env=copy_environment(repo), timeout=300)
    assert temp.returncode != 0 and "--temp / --queue is not supported" in temp.stdout + temp.stderr


# ------------------------------------------------------------------------------------- sweeps


@pytest.mark.slow
def test_the_sweep_chooses_a_configuration_that_the_final_training_uses(ci_run):
    for model in ("pixelcnn", "pixeliqn"):
        sweep = ci_run / "results/sweeps/digits" / model
        chosen = json.loads((sweep / "selected.json").read_text())
        assert chosen["mode"] == "successive halving" and chosen["budgets"] == [20, 60]
        rung0 = json.loads((sweep / "rung0.json").read_text())
        assert len(rung0["ranking"]) == 3 and len(rung0["promoted"]) == 1  # the best third goes on
        assert chosen["chosen"] == rung0["promoted"][0]
        assert chosen["compute_steps"] == 3 * 20 + 40
        trained = json.loads((ci_run / "results/runs/digits" / model / "seed-1/config.json").read_text())["train"]
        assert trained["seed"] == 1  # every seed trains the one configuration the sweep chose
        assert trained["optimizer"] == chosen["config"]["optimizer"]
        assert trained["lr"] == pytest.approx(chosen["config"]["lr"])
        if model == "pixeliqn":
            assert trained["kappa"] == pytest.approx(chosen["config"]["kappa"])
        assert "vs 216 val)" in (sweep / "rung0" / f"{rung0['promoted'][0]}.json").read_text()  # ranked on val
        report = pd.read_csv(ci_run / f"reports/sweeps/digits_{model}.csv")
        assert len(report) == 4 and report.chosen.sum() == 1
        assert (ci_run / f"reports/figures/digits_{model}_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert not (ci_run / "results/sweeps/photos32").exists()  # sweep.datasets: digits only
    # common random numbers: both heads' trial t<i> drew the same optimizer and lr, shown side by side
    drawn = {model: pd.read_csv(ci_run / f"results/sweeps/digits/{model}/configs.tsv", sep="\t")
             for model in ("pixelcnn", "pixeliqn")}
    pd.testing.assert_frame_equal(drawn["pixelcnn"][["trial", "optimizer", "lr"]], drawn["pixeliqn"][["trial", "optimizer", "lr"]])
    shared = pd.read_csv(ci_run / "reports/sweeps/shared/digits.csv")
    assert shared.lr.tolist() == drawn["pixelcnn"].lr.tolist() and {"pixelcnn FID @20", "pixeliqn FID @60"} <= set(shared)
    assert "common random numbers" in (ci_run / "reports/sweeps/shared/digits.md").read_text()


@pytest.mark.slow
def test_a_transiently_failed_trial_is_rerun_and_nothing_else(ci_run, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ci_run, repo, symlinks=True)
    trial = repo / "results/sweeps/digits/pixeliqn/rung0/t001.json"
    record = json.loads(trial.read_text())
    record.update(status="failed", retry=True, reason="RuntimeError: CUDA out of memory", value=None)
    trial.write_text(json.dumps(record))
    planned = snakemake(repo, "--profile", "profiles/ci", "-n")
    assert planned.returncode == 0, planned.stdout[-3000:]
    text = planned.stdout + planned.stderr
    assert "--trial t001 --rung 0 --attempt 2" in text
    assert "--trial t000" not in text and "--trial t002" not in text  # finished trials are kept
    # a diverged trial is a result, not a failure to retry
    record.update(status="diverged", retry=False, reason="the training loss is nan at step 3")
    trial.write_text(json.dumps(record))
    calm = snakemake(repo, "--profile", "profiles/ci", "-n")
    assert "sweep-trial" not in calm.stdout + calm.stderr


@pytest.mark.slow
def test_inpainting_and_quantile_density_figures_come_with_the_run(ci_run):
    models = {"digits": {"pixelcnn", "pixeliqn", "pixelcnn_cond", "pixeliqn_cond"},
              "photos32": {"pixelcnn", "pixeliqn", "pixeliqn_cond"},  # profiles/ci: run.models_per_dataset
              "photos8": {"pixelcnn", "pixeliqn"}}
    for dataset in ("digits", "photos32", "photos8"):
        record = json.loads((ci_run / f"results/inpainting/{dataset}.npz.json").read_text())
        assert set(record["models"]) == models[dataset] and record["completions"] == 5
        with __import__("numpy").load(ci_run / f"results/inpainting/{dataset}.npz") as arrays:
            originals, completions = arrays["originals"], arrays["pixeliqn_completions"]
        top = originals.shape[2] // 2
        assert (completions[:, :, :, :top] == originals[:, None, :, :top]).all()  # the given half is kept
        density = json.loads((ci_run / f"results/density/{dataset}/pixeliqn.npz.json").read_text())
        # the density pass recomputes each quantile in float32; one in ~50,000 lands across a level's
        # rounding boundary from the sampler's value (seen on photos32), so not exactly 1
        assert density["fraction_matches_sample"] > 0.999 and density["n"] == 16
        for figure in (f"{dataset}_inpainting.png", f"{dataset}_pixeliqn_density.png"):
            assert (ci_run / "reports/figures" / figure).read_bytes()[:4] == b"\x89PNG"
    assert not (ci_run / "reports/figures/digits_pixelcnn_density.png").exists()  # PixelIQN only


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_runs_bytes(ci_run, tmp_path):
    """scripts/fault_injection.py's one kill point in the suite: SIGKILL to snakemake's whole process
    tree while photos32's PixelCNN trains (past its first checkpoint), then `--unlock` and
    `--rerun-incomplete`: the training resumes from that checkpoint and every output the run made
    (prepared data, checkpoints, log) has the sha256 of the uninterrupted run's file. (The training
    only, to keep the suite short: what is downstream of equal checkpoints is equal, as two whole
    uninterrupted runs show, docs/benchmarks.md "Faults".)"""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from compare_runs import byte_differences, output_files
        from fault_injection import KillPoint, run_with_kills
    finally:
        sys.path.remove(str(REPO / "scripts"))
    repo = copy_repo(tmp_path / "repo")
    point = KillPoint("training", 1, 0.5, rule="train_photos32_pixelcnn",
                      when_exists="state/train/photos32/pixelcnn/seed-0/ckpt_0000050.pt")
    said = []
    finished = run_with_kills(repo, "profiles/ci", [point], ["results/runs/photos32/pixelcnn/seed-0/ckpt_0000150.pt"],
                              tmp_path / "snakemake.log", say=said.append)
    assert finished, said
    assert said[0].startswith("invocation 1: killed") and "train_photos32_pixelcnn" in said[0], said
    assert "already finished" not in said[0] and "ran to the end" in said[1], said
    log = (repo / "logs/train/photos32/pixelcnn/seed-0.log").read_text()
    assert "resuming from" in log and "(step 50)" in log  # the restart continued, not began again
    compared, differing = byte_differences(ci_run, repo, within_b=True)
    assert not differing, differing
    compared_files = set(output_files(repo))  # what byte_differences compared (run facts left out)
    assert {f"results/runs/photos32/pixelcnn/seed-0/{name}" for name in
            ("ckpt_0000050.pt", "ckpt_0000150.pt", "train_log.csv", "config.json")} <= compared_files
    assert "data/processed/photos32/train.npz" in compared_files and compared == len(compared_files)
