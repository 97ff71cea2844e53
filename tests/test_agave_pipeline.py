"""AGAVE in the pipeline (rules/agave.smk, aiqn.methods.agave.verbs): the verbs end to end on tiny digits
models (train-agave at two lambdas -> the ablation from one of them -> the matched baseline by the
`train` verb -> evaluate-agave -> table -> provenance -> agave-figures), the metric labels, the
paper's Table 1 file, the dry runs of the default and paper profiles, and (slow) the CI profile's
AGAVE targets in a copy of the repository."""

from __future__ import annotations

import json
import os
import re
import shutil

import pandas as pd
import pytest
import torch
import yaml

from aiqn.cli import main
from aiqn.report.provenance import load_table_records, missing_fields
from aiqn.core.io import read_json
from repo_copy import REPO, copy_repo, repo_layout, snakemake

ARCHITECTURE = {"latent_dim": 4, "base_channels": 8, "max_channels": 16, "cond_planes": 4, "blocks": 2,
                "planes": 8, "output_planes": 16}
TRAIN = {"steps": 10, "batch_size": 16, "ema_rate": 0.5, "checkpoint_steps": [5], "seed": 0}


def train_agave_args(train: dict, state: str, out: str, data, init: str | None = None) -> list[str]:
    args = ["train-agave", "--dataset", "digits", "--data", str(data), "--architecture", json.dumps(ARCHITECTURE),
            "--train-config", json.dumps(train), "--state-dir", state, "--out-dir", out, "--device", "cpu",
            "--no-progress"]
    return args + (["--init-from", init] if init else [])


def evaluate_args(name: str, checkpoint: str, k: int, data: str) -> list[str]:
    return ["evaluate-agave", "--dataset", "digits", "--model", name, "--checkpoint", checkpoint,
            "--test", f"{data}/test.npz", "--dataset-meta", f"{data}/meta.json", "--k", str(k), "--n-test", "40",
            "--batch-size", "20", "--k-batch", "3", "--device", "cpu", "--rule", "evaluate_agave",
            "--wildcards", f"dataset=digits,name={name}", "--out", f"results/agave/digits/metrics/{name}.json"]


@pytest.fixture(scope="module")
def run(digits_dir, tmp_path_factory):
    """The rules' commands, in-process, in a folder laid out like the repository."""
    root = tmp_path_factory.mktemp("agave_run")
    with repo_layout(root, digits_dir) as data:
        for lam in (1, 2):
            main(train_agave_args({**TRAIN, "kl_weight": lam}, f"state/agave/digits/lambda{lam}",
                                  f"results/agave/digits/lambda{lam}", f"{data}/train.npz"))
        main(train_agave_args({**TRAIN, "kl_weight": 2, "use_aux": False, "steps": 6, "checkpoint_steps": []},
                              "state/agave/digits/ablation", "results/agave/digits/ablation", f"{data}/train.npz",
                              init="results/agave/digits/lambda2/ckpt_0000010.pt"))
        main(["train", "--dataset", "digits", "--data", f"{data}/train.npz", "--model-config",
              json.dumps({"head": "categorical", "blocks": 2, "filter_size": 3, "planes": 8, "output_planes": 16}),
              "--train-config", json.dumps({"steps": 10, "batch_size": 16, "optimizer": "adam", "lr": 1e-3,
                                            "ema_rate": 0.5, "checkpoint_steps": [10], "seed": 0}),
              "--state-dir", "state/agave/digits/baseline", "--out-dir", "results/agave/digits/baseline",
              "--device", "cpu", "--no-progress"])
        main(evaluate_args("lambda1", "results/agave/digits/lambda1/ckpt_0000010.pt", 0, data))
        main(evaluate_args("lambda2", "results/agave/digits/lambda2/ckpt_0000010.pt", 4, data))
        main(evaluate_args("baseline", "results/agave/digits/baseline/ckpt_0000010.pt", 0, data))
        os.makedirs("paper")
        shutil.copy2(REPO / "paper/agave_table1.csv", "paper/agave_table1.csv")
        main(["table", "--name", "agave_table1", "--title", "AGAVE", "--caption", "test", "--paper-heading",
              "Paper (Lucas & Verbeek 2018)", "--metrics", "results/agave/digits/metrics/baseline.json",
              "results/agave/digits/metrics/lambda2.json", "--paper", "paper/agave_table1.csv",
              "--out-dir", "reports/tables", "--provenance", "reports/provenance/agave_table1.json"])
        main(["agave-figures", "--dataset", "digits", "--metrics",
              *[f"{lam}=results/agave/digits/metrics/lambda{lam}.json" for lam in (1, 2)],
              "--checkpoint", "results/agave/digits/lambda2/ckpt_0000010.pt", "--n-latents", "3", "--per-latent", "4",
              "--seed", "1", "--device", "cpu", "--samples-out", "results/agave/digits/samples.npz",
              "--phase1-log", "results/agave/digits/lambda2/train_log.csv",
              "--phase2-log", "results/agave/digits/ablation/train_log.csv",
              "--lambda-out", "reports/figures/digits_agave_lambda.png",
              "--samples-figure", "reports/figures/digits_agave_samples.png",
              "--ablation-out", "reports/figures/digits_agave_ablation.png"])
        yield root


def test_train_agave_publishes_its_state_and_a_record(run):
    for name, lam, aux in (("lambda1", 1.0, True), ("lambda2", 2.0, True), ("ablation", 2.0, False)):
        out, state = run / "results/agave/digits" / name, run / "state/agave/digits" / name
        step = 6 if name == "ablation" else 10
        for file in (f"ckpt_{step:07d}.pt", "train_log.csv", "config.json"):
            assert os.path.samefile(out / file, state / file), file
        record = read_json(out / "train.json")
        assert (record["kl_weight"], record["use_aux"], record["step"]) == (lam, aux, step)
        assert record["config"]["model"]["blocks"] == 2 and "seconds_this_invocation" not in record
        assert read_json(out / "train.json.runinfo.json")["seconds_this_invocation"] > 0  # run facts, apart
    ablation = read_json(run / "results/agave/digits/ablation/train.json")
    first = torch.load(run / "results/agave/digits/lambda2/ckpt_0000010.pt", weights_only=False)
    assert ablation["init_from"]["path"] == "results/agave/digits/lambda2/ckpt_0000010.pt"
    assert ablation["init_from"]["digest"] == first["digest"] and ablation["init_from"]["step"] == 10
    assert len(pd.read_csv(run / "results/agave/digits/ablation/train_log.csv")) == 6


def test_metric_files_say_which_bound_and_carry_complete_provenance(run):
    labels = {}
    for name in ("lambda1", "lambda2", "baseline"):
        record = read_json(run / f"results/agave/digits/metrics/{name}.json")
        assert record["dataset"] == "digits" and record["final"] and record["step"] == 10
        labels[name] = [m["label"] for m in record["metrics"]]
        provenance = record["provenance"]
        assert missing_fields({**provenance, "metrics_file": {"path": "x"}}) == []
        assert provenance["rule"] == {"name": "evaluate_agave", "wildcards": {"dataset": "digits", "name": name}}
        assert provenance["test_images"]["n"] == 40 and len(provenance["test_images"]["sha256"]) == 64
    assert labels["lambda1"] == ["bits/dim, eq. 7 bound (digits test split, 1 z per image, EMA weights)",
                                 "KL term of the eq. 7 bound (bits/dim, digits test split, EMA weights)"]
    assert labels["lambda2"][1] == "bits/dim, importance-sampled bound (digits test split, K=4, EMA weights)"
    assert labels["baseline"] == ["bits/dim, exact (digits test split, EMA weights)"]
    elbo = read_json(run / "results/agave/digits/metrics/lambda2.json")["evaluation"]["bounds"]["elbo"]
    assert elbo["bpd"] == pytest.approx(elbo["reconstruction"] + elbo["kl"])


def test_table_puts_the_papers_numbers_beside_ours(run, capsys):
    table = pd.read_csv(run / "reports/tables/agave_table1.csv")
    ours = table[table.source == "ours"]
    assert set(ours.model) == {"baseline", "lambda2"}  # the names given by --model
    assert set(ours.dataset) == {"digits"} and len(ours) == 4  # exact; eq. 7, importance-sampled, KL
    paper = table[table.source != "ours"]
    values = dict(zip(paper.model, paper.value))
    assert values["PixelCNN [21]"] == 3.14 and values["Gated PixelCNN [20]"] == 3.03
    assert values["PixelCNN++ [25]"] == 2.92 and values["AGAVE, lambda=12 (this paper)"] == 2.92
    cells = load_table_records(run / "reports/provenance", "agave_table1")  # table_provenance accepted every cell
    assert len(cells) == len(table)
    md = (run / "reports/tables/agave_table1.md").read_text()
    assert "importance-sampled bound (digits test split, K=4" in md and "Paper (Lucas & Verbeek 2018)" in md
    cwd = os.getcwd()
    os.chdir(run)
    try:
        capsys.readouterr()
        main(["provenance", "agave_table1", "--row", "lambda2", "--metric",
              "bits/dim, importance-sampled bound (digits test split, K=4, EMA weights)"])
    finally:
        os.chdir(cwd)
    text = capsys.readouterr().out
    assert "results/agave/digits/lambda2/ckpt_0000010.pt" in text and "evaluate_agave" in text


def test_figures_are_written(run):
    for kind in ("lambda", "samples", "ablation"):
        assert (run / f"reports/figures/digits_agave_{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = read_json(run / "reports/figures/digits_agave_samples.png.json")
    assert (record["n_latents"], record["per_latent"], record["kl_weight"]) == (3, 4, 2.0)
    import numpy as np

    with np.load(run / "results/agave/digits/samples.npz") as draws:
        assert draws["images"].shape == (3, 4, 1, 8, 8) and draws["aux_images"].shape == (3, 1, 8, 8)


def test_the_paper_table_file_has_table1s_columns_and_sources():
    paper = pd.read_csv(REPO / "paper/agave_table1.csv")
    columns = pd.read_csv(REPO / "paper/aiqn_table1.csv").columns
    assert list(paper.columns) == list(columns)
    assert paper.source.str.startswith("paper").all() and set(paper.dataset) == {"cifar10"}
    assert len(paper) == 12 and (paper.metric == "bits/dim").all()


# ---------------------------------------------------------------------------- Snakemake plans


def _agave_jobs(text: str) -> dict[tuple[str, int], str]:
    """train-agave commands by their out-dir's run and seed: {("lambda2", 0): command, ("ablation", 0): ...}."""
    return {(m.group(1), int(m.group(2))): m.group(0) for m in
            re.finditer(r"train-agave --dataset \S+ .*--out-dir results/agave/[^/\s]+/([^/\s]+)/seed-(\d+) .*", text)}


def _baseline_jobs(text: str, dataset: str) -> dict[tuple[str, int], dict]:
    """The matched baselines' `train` commands by run name and seed: {"model": ..., "train": ...} configs."""
    jobs = {}
    for m in re.finditer(rf"train --dataset {dataset} .*--out-dir results/agave/{dataset}/([^/\s]+)/seed-(\d+) .*",
                         text):
        jobs[m.group(1), int(m.group(2))] = {key: json.loads(re.search(rf"--{key}-config '([^']+)'", m.group(0)).group(1))
                                             for key in ("model", "train")}
    return jobs


def test_the_default_dry_run_plans_the_agave_jobs(tmp_path):
    repo = copy_repo(tmp_path)
    everything = yaml.safe_load((repo / "params.yaml").read_text())
    params, seeds = everything["agave"], everything["run"]["seeds"]
    result = snakemake(repo, "-n", "-p", "--cores", "2", *[f"reports/figures/digits_agave_{k}.png" for k in
                                                            ("lambda", "samples", "ablation")],
                       "reports/tables/agave_table1.md", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    jobs = _agave_jobs(text)
    ablation = f"lambda{float(params['ablation']['lambda']):g}"
    table = {(run, seed) for run in [f"lambda{float(v):g}" for v in params["table_lambdas"]] + [ablation, "ablation"]
             for seed in seeds}  # every seed: the table's rows, the ablation and the lambda it continues
    figure = {(f"lambda{float(v):g}", seeds[0]) for v in params["figure_lambdas"]}  # the figure's seed only
    assert len(seeds) >= 3 and set(jobs) == table | figure
    for (run, seed), command in jobs.items():
        assert json.loads(re.search(r"--train-config '([^']+)'", command).group(1))["seed"] == seed
    for seed in seeds:
        assert f"--init-from results/agave/digits/{ablation}/seed-{seed}/" in jobs["ablation", seed]
        assert '"use_aux":false' in jobs["ablation", seed]
        assert re.search(rf"evaluate-agave --dataset digits --model 'AGAVE \(lambda={ablation[6:]}\), no auxiliary "
                         rf"loss' .*name=ablation,seed={seed} ", text)
    baselines = _baseline_jobs(text, "digits")
    assert set(baselines) == {(run, seed) for run in ("baseline", "plain") for seed in seeds}
    assert baselines["plain", 0]["model"]["gated"] is False and "gated" not in baselines["baseline", 0]["model"]
    for (run, seed), job in baselines.items():  # the matched sizes, optimizer and seed
        assert {key: job["model"][key] for key in ("blocks", "filter_size", "planes", "output_planes")} == \
            {key: params["architecture"][key] for key in ("blocks", "filter_size", "planes", "output_planes")}
        assert (job["train"]["optimizer"], job["train"]["steps"]) == ("adamax", params["train"]["steps"])
        assert job["train"]["seed"] == seed
    assert re.search(r"evaluate-agave .*name=plain\b", text)
    k = params["evaluation"]["importance_k"]
    for lam in params["table_lambdas"]:
        for seed in seeds:
            assert re.search(rf"evaluate-agave .*--k {k} .*name=lambda{float(lam):g},seed={seed} ", text)


def test_the_paper_profile_plans_cifar10_agave_at_the_papers_settings(tmp_path):
    repo = copy_repo(tmp_path)
    result = snakemake(repo, "--profile", "profiles/paper", "-n", "-p", "reports/tables/agave_table1.md",
                       "reports/figures/cifar10_agave_lambda.png", "reports/figures/cifar10_agave_ablation.png",
                       "reports/figures/cifar10_agave_samples.png", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    jobs = _agave_jobs(text)
    assert {run for run, _ in jobs} == {f"lambda{lam}" for lam in range(1, 13)} | {"ablation"}
    for (name, _), command in jobs.items():
        assert "--dataset cifar10 --data data/processed/cifar10/train.npz" in command and "--device cuda" in command
        train = json.loads(re.search(r"--train-config '([^']+)'", command).group(1))
        assert (train["optimizer"], train["lr"]) == ("adamax", 0.002)
        if name != "ablation":
            assert train["kl_weight"] == float(name[len("lambda"):]) and train.get("use_aux", True)
    ablation = json.loads(re.search(r"--train-config '([^']+)'", jobs["ablation", 0]).group(1))
    assert ablation["use_aux"] is False and "--init-from results/agave/cifar10/lambda" in jobs["ablation", 0]
    assert re.search(r"evaluate-agave .*--k 150 .*name=lambda12,seed=0 ", text)
    baselines = _baseline_jobs(text, "cifar10")
    assert {run for run, _ in baselines} == {"baseline", "plain"}
    assert all((job["train"]["optimizer"], job["train"]["lr"]) == ("adamax", 0.002) for job in baselines.values())
    assert re.search(r"rule train_agave:(?:\n .*)*\n\s+resources: .*gpu=1", text)


def test_an_agave_dataset_without_its_datasets_section_is_named(tmp_path):
    repo = copy_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["agave"]["datasets"] = ["digits", "mnist"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(repo, "-n", "--cores", "1", timeout=120)
    assert result.returncode != 0
    assert "agave.datasets lists 'mnist' but datasets.mnist is missing" in result.stdout + result.stderr


@pytest.mark.slow
def test_the_ci_profile_runs_the_agave_targets(ci_run):
    targets = ["reports/tables/agave_table1.md"] + [f"reports/figures/digits_agave_{k}.png"
                                                    for k in ("lambda", "samples", "ablation")]
    for target in targets + ["reports/provenance/agave_table1.json"]:
        assert (ci_run / target).exists(), target
    # one evaluation job per seed wrote every table row's bits/dim, each with its own provenance record
    for name in ("plain", "baseline", "lambda2", "ablation"):
        for seed in (0, 1):
            record = read_json(ci_run / f"results/agave/digits/metrics/{name}/seed-{seed}.json")
            assert record["provenance"]["rule"] == {"name": "evaluate_agave",
                                                    "wildcards": {"dataset": "digits", "name": name, "seed": str(seed)}}
