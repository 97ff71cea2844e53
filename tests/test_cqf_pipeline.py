"""CQF in the pipeline (rules/cqf.smk, aiqn.methods.cqf.verbs): the verbs end to end on tiny digits models
(train-cqf for gan, vae, cq, cqf -> sample-cqf -> evaluate with bits/dim -> table -> provenance ->
cqf-figures), an interrupted train-cqf resumes to the same checkpoint, the paper's Table 1 numbers,
the dry runs of the default and the paper profiles, and (slow) the CI profile's CQF targets."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from aiqn.cli import main
from aiqn.methods.cqf.verbs import bits_per_dim_label
from aiqn.report.provenance import load_table_records, missing_fields, table_provenance
from aiqn.report.tables import build_table1
from aiqn.core.io import read_json
from repo_copy import REPO, comparison_labels, copy_repo, digits_scoring, repo_layout, snakemake

VARIANTS = ("gan", "vae", "cq", "cqf")
ARCHITECTURE = {"latent_dim": 4, "base_channels": 8, "max_channels": 16, "flow_hidden": 8, "flow_blocks": 1,
                "disc_base_channels": 8, "disc_max_channels": 16}
TRAIN = {"steps": 8, "batch_size": 16, "lr": 0.002, "d_steps": 2, "ema_rate": 0.5, "checkpoint_steps": [4], "seed": 0}
CKPT = "ckpt_0000008.pt"


def train_cqf_args(variant: str, train: dict, state: str, out: str, data) -> list[str]:
    return ["train-cqf", "--dataset", "digits", "--data", str(data), "--variant", variant,
            "--architecture", json.dumps(ARCHITECTURE), "--train-config", json.dumps(train),
            "--state-dir", state, "--out-dir", out, "--device", "cpu", "--no-progress"]


def evaluate_args(variant: str, extractor: list[str], reference: str, data: str, out: str, k: int = 1) -> list[str]:
    """`extractor`: the extractor and comparison arguments (repo_copy.digits_scoring)."""
    return ["evaluate", *extractor, "--dataset", "digits", "--model", variant,
            "--samples", f"results/cqf/digits/samples/{variant}.npz", "--checkpoint", f"results/cqf/digits/{variant}/{CKPT}",
            "--reference", reference, "--test", f"{data}/test.npz", "--dataset-meta", f"{data}/meta.json",
            "--splits", "2", "--final", "--rule", "score_cqf", "--importance-samples", str(k), "--bpd-seed", "0",
            "--wildcards", f"dataset=digits,variant={variant}", "--out", out]


@pytest.fixture(scope="module")
def run(digits_dir, tmp_path_factory):
    """The rules' commands, in-process, in a folder laid out like the repository."""
    root = tmp_path_factory.mktemp("cqf_run")
    with repo_layout(root, digits_dir) as data:
        extractor, reference, comparison = digits_scoring(data)
        extractor = extractor + comparison
        main(["evaluate-real", *extractor, "--dataset", "digits", "--test", f"{data}/test.npz", "--reference", reference,
              "--dataset-meta", f"{data}/meta.json", "--splits", "2", "--wildcards", "dataset=digits",
              "--out", "results/metrics/digits/real_test.json"])
        metrics = []
        for variant in VARIANTS:
            main(train_cqf_args(variant, TRAIN, f"state/cqf/digits/{variant}", f"results/cqf/digits/{variant}",
                                f"{data}/train.npz"))
            main(["sample-cqf", "--checkpoint", f"results/cqf/digits/{variant}/{CKPT}", "--n", "60", "--seed", "1",
                  "--batch-size", "25", "--device", "cpu", "--out", f"results/cqf/digits/samples/{variant}.npz"])
            metrics.append(f"results/cqf/digits/metrics/{variant}.json")
            main(evaluate_args(variant, extractor, reference, data, metrics[-1]))
        # the importance-weighted bound of one checkpoint, for the label and the inequality
        main(evaluate_args("cqf", extractor, reference, data, "results/cqf/digits/metrics_iw/cqf.json", k=8))
        os.makedirs("paper")
        shutil.copy2(REPO / "paper/cqf_table1.csv", "paper/cqf_table1.csv")
        main(["table", "--name", "cqf_table1", "--title", "CQF Table 1", "--caption", "test",
              "--paper-heading", "Paper (Shmelkov et al. 2018, Table 1)", "--metrics", *metrics,
              "results/metrics/digits/real_test.json", "--paper", "paper/cqf_table1.csv", "--out-dir", "reports/tables",
              "--provenance", "reports/provenance/cqf_table1.json"])
        main(["cqf-figures", "--dataset", "digits", "--real", f"{data}/test.npz", "--samples",
              *[f"{v}=results/cqf/digits/samples/{v}.npz" for v in VARIANTS],
              "--train-logs", *[f"{v}=results/cqf/digits/{v}/train_log.csv" for v in VARIANTS],
              "--grid-n", "16", "--grid-out", "reports/figures/digits_cqf_samples.png",
              "--loss-out", "reports/figures/digits_cqf_curves.png"])
        yield root


def test_train_cqf_publishes_hard_links_of_its_state_and_a_record(run):
    for variant in VARIANTS:
        out, state = run / "results/cqf/digits" / variant, run / "state/cqf/digits" / variant
        for name in (CKPT, "train_log.csv", "config.json"):
            assert os.path.samefile(out / name, state / name), name
        assert not (out / "ckpt_0000004.pt").exists() and (state / "ckpt_0000004.pt").exists()
        record = read_json(out / "train.json")
        assert record["variant"] == variant and record["step"] == 8 and record["seed"] == 0
        assert record["config"]["train"]["variant"] == variant and record["config"]["train"]["d_steps"] == 2
        assert record["config"]["model"]["latent_dim"] == 4 and record["config"]["model"]["levels"] == 17
        assert (record["parameters"]["flow"] > 0) == (variant == "cqf")
        assert (record["parameters"]["discriminator"] > 0) == (variant != "vae")
        assert record["checkpoint"]["path"] == f"results/cqf/digits/{variant}/{CKPT}"
        assert {"packages", "python"} <= set(record["environment"]) and "host" not in record["environment"]
        assert "host" in read_json(out / "train.json.runinfo.json")  # where it ran: in the run facts


def test_samples_are_uint8_levels_with_a_record(run):
    for variant in VARIANTS:
        path = run / f"results/cqf/digits/samples/{variant}.npz"
        with np.load(path) as arrays:
            images = arrays["images"]
        assert images.shape == (60, 1, 8, 8) and images.dtype == np.uint8 and images.max() <= 16
        meta = read_json(f"{path}.json")
        assert (meta["n"], meta["seed"], meta["variant"], meta["weights"], meta["decoder_noise"]) == \
            (60, 1, variant, "ema", False)
        assert meta["checkpoint"]["path"].endswith(f"{variant}/{CKPT}") and len(meta["checkpoint"]["sha256"]) == 64


def test_metric_files_name_extractor_counts_bound_and_split(run):
    test_n = len(np.load(run / "data/processed/digits/test.npz")["images"])
    train_n = len(np.load(run / "data/processed/digits/train.npz")["images"])
    for variant in VARIANTS:
        record = read_json(run / f"results/cqf/digits/metrics/{variant}.json")
        assert record["model"] == variant and record["final"] and record["step"] == 8 and record["n_samples"] == 60
        labels = {m["metric"]: m["label"] for m in record["metrics"]}
        expected = {"FID": "FID (digits-classifier, 60 samples vs 200 train)",
                    "IS": "IS (digits-classifier, 60 samples, 2 splits)", **comparison_labels(train_n, test_n)}
        if variant != "gan":  # the GAN has no likelihood
            expected["bits/dim"] = (f"bits/dim (digits test split, {test_n} images, ELBO, 17 levels dequantized, "
                                    "EMA weights)")
            bpd = next(m for m in record["metrics"] if m["metric"] == "bits/dim")
            assert np.isfinite(bpd["value"]) and bpd["importance_samples"] == 1 and bpd["n_images"] == test_n
            terms = bpd["terms_nats_per_image"]
            assert (terms["logdet"] != 0) == (variant == "cqf")  # only the flow has a log-determinant
        assert labels == expected
        provenance = record["provenance"]
        assert missing_fields({**provenance, "metrics_file": {"path": "x"}}) == []
        assert provenance["rule"] == {"name": "score_cqf", "wildcards": {"dataset": "digits", "variant": variant}}
        assert provenance["checkpoint"]["path"] == f"results/cqf/digits/{variant}/{CKPT}"
        assert provenance["config"]["train"]["variant"] == variant


def test_the_importance_weighted_bound_is_labelled_and_not_looser(run):
    elbo = next(m for m in read_json(run / "results/cqf/digits/metrics/cqf.json")["metrics"] if m["metric"] == "bits/dim")
    iw = next(m for m in read_json(run / "results/cqf/digits/metrics_iw/cqf.json")["metrics"] if m["metric"] == "bits/dim")
    assert "importance-weighted bound, K=8" in iw["label"] and iw["importance_samples"] == 8
    assert iw["label"] == bits_per_dim_label("digits", iw["n_images"], 17, 8)
    assert iw["value"] <= elbo["value"] + 0.05  # a tighter bound (up to the noise of one dequantization draw)


def test_table_rows_paper_section_and_provenance_command(run, capsys):
    table = pd.read_csv(run / "reports/tables/cqf_table1.csv")
    ours = table[table.source == "ours"]
    assert list(pd.unique(ours.model)) == [*VARIANTS, "real data (test split)"]  # the paper's row order
    assert set(ours[ours.metric == "bits/dim"].model) == {"vae", "cq", "cqf"}
    paper = table[table.source != "ours"]
    assert list(pd.unique(paper.model)) == ["GAN", "VAE", "CQ", "CQF"] and set(paper.dataset) == {"cifar10"}
    cells = load_table_records(run / "reports/provenance", "cqf_table1")  # table_provenance accepted every cell
    assert len(cells) == len(table) and all(c["record"]["table_rule"] == "cqf_table1" for c in cells)
    md = (run / "reports/tables/cqf_table1.md").read_text()
    assert "Paper (Shmelkov et al. 2018, Table 1)" in md and "| cqf " in md
    cwd = os.getcwd()
    os.chdir(run)
    try:
        capsys.readouterr()
        main(["provenance", "cqf_table1", "--row", "cqf", "--metric", "bits/dim"])
    finally:
        os.chdir(cwd)
    text = capsys.readouterr().out
    for expected in (f"results/cqf/digits/cqf/{CKPT}", "results/cqf/digits/samples/cqf.npz", "flow_checkerboard_layers=3",
                     "adamax lr=0.002 steps=8 batch=16 ema=0.5", "score_cqf", "step 8, ema weights"):
        assert expected in text, expected


def test_table_provenance_accepts_the_metric_files(run):
    files = [str(run / f"results/cqf/digits/metrics/{v}.json") for v in VARIANTS]
    table = build_table1(files, str(REPO / "paper/cqf_table1.csv"))
    cells = table_provenance(table, "cqf_table1", rule="cqf_table1", paper_csv=str(REPO / "paper/cqf_table1.csv"))
    assert len(cells) == 3 * 9 + 8 + 11  # 3 likelihood variants x 9 metrics, the gan's 8, the paper's 11
    assert len(cells) == len(table)


def test_figures_are_written(run):
    for name in ("digits_cqf_samples.png", "digits_cqf_curves.png"):
        assert (run / "reports/figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = read_json(run / "reports/figures/digits_cqf_samples.png.json")
    assert [panel["name"] for panel in record["panels"]] == list(VARIANTS)
    assert all(panel["meta"]["variant"] == panel["name"] for panel in record["panels"])


def test_the_paper_csv_holds_table1_of_the_paper():
    paper = pd.read_csv(REPO / "paper/cqf_table1.csv")
    assert paper.source.str.startswith("paper").all() and set(paper.dataset) == {"cifar10"}
    values = {(r.model, r.metric): r.value for r in paper.itertuples()}
    assert values == {("GAN", "IS"): 6.8, ("GAN", "FID"): 31.4,
                      ("VAE", "bits/dim"): 4.4, ("VAE", "IS"): 2.0, ("VAE", "FID"): 171.0,
                      ("CQ", "bits/dim"): 4.4, ("CQ", "IS"): 5.1, ("CQ", "FID"): 58.6,
                      ("CQF", "bits/dim"): 3.9, ("CQF", "IS"): 7.1, ("CQF", "FID"): 28.0}
    assert list(paper.columns) == list(pd.read_csv(REPO / "paper/aiqn_table1.csv").columns)


def test_an_interrupted_train_cqf_resumes_to_the_same_checkpoint(digits_dir, tmp_path):
    """Kill the job after its step-3 checkpoint (here: remove the later state and the outputs, as
    Snakemake does to a failed job's outputs); the rerun resumes from step 3, bit for bit."""
    train = {"steps": 6, "batch_size": 8, "checkpoint_steps": [3], "seed": 2, "d_steps": 2}
    data = digits_dir / "train.npz"
    runs = {}
    for name in ("straight", "resumed"):
        state, out = tmp_path / name / "state", tmp_path / name / "out"
        main(train_cqf_args("cqf", train, str(state), str(out), data))
        runs[name] = (state, out)
    state, out = runs["resumed"]
    (state / "ckpt_0000006.pt").unlink()  # the run "died" between steps 3 and 6
    shutil.rmtree(out)
    main(train_cqf_args("cqf", train, str(state), str(out), data))
    a, b = (torch.load(runs[name][1] / "ckpt_0000006.pt", weights_only=False) for name in ("straight", "resumed"))
    for key in ("model", "ema", "discriminator"):
        for param in a[key]:
            assert torch.equal(a[key][param], b[key][param]), f"{key}.{param}"
    logs = [pd.read_csv(runs[name][1] / "train_log.csv") for name in ("straight", "resumed")]
    assert logs[0]["step"].tolist() == logs[1]["step"].tolist() == list(range(1, 7))
    assert logs[0]["loss"].tolist() == logs[1]["loss"].tolist()


def test_decoder_noise_of_the_gan_is_refused(run):
    with pytest.raises(SystemExit, match="no decoder noise"):
        main(["sample-cqf", "--checkpoint", str(run / f"results/cqf/digits/gan/{CKPT}"), "--decoder-noise",
              "--n", "2", "--device", "cpu", "--out", str(run / "x.npz")])


# ---------------------------------------------------------------------------- Snakemake plans


def _cqf_train_commands(text: str) -> dict[tuple[str, int], str]:
    """train-cqf commands by variant and the seed of their out-dir: {("cq", 0): command, ...}."""
    return {(m.group(1), int(m.group(2))): m.group(0) for m in
            re.finditer(r"train-cqf --dataset \S+ .*--variant (\S+) .*--out-dir \S+/seed-(\d+) .*", text)}


def test_the_default_run_plans_the_four_digits_variants(tmp_path):
    repo = copy_repo(tmp_path)
    result = snakemake(repo, "-n", "-p", "--cores", "2", "reports/tables/cqf_table1.md",
                       "reports/figures/digits_cqf_samples.png", "reports/figures/digits_cqf_curves.png", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    commands = _cqf_train_commands(text)
    everything = yaml.safe_load((REPO / "params.yaml").read_text())
    params, seeds = everything["cqf"], everything["run"]["seeds"]
    assert len(seeds) >= 3 and set(commands) == {(variant, seed) for variant in VARIANTS for seed in seeds}
    for (variant, seed), command in commands.items():  # params.yaml's values (the schema fills in the others)
        architecture = json.loads(re.search(r"--architecture '([^']+)'", command).group(1))
        assert {key: architecture[key] for key in params["architecture"]} == params["architecture"]
        train = json.loads(re.search(r"--train-config '([^']+)'", command).group(1))
        assert {key: train[key] for key in params["train"]} == params["train"] and train["seed"] == seed
        assert f"--state-dir state/cqf/digits/{variant}/seed-{seed} " in command
    for variant in VARIANTS:
        assert f"evaluate --dataset digits --model {variant} " in text
        for seed in seeds:
            assert re.search(rf"sample-cqf --checkpoint results/cqf/digits/{variant}/seed-{seed}/ckpt_\d{{7}}.pt"
                             rf" --n 1000 .*--out results/cqf/digits/samples/{variant}/seed-{seed}.npz ", text)
    assert "--rule score_cqf --importance-samples 1 --bpd-seed 0" in text
    assert "results/reference/digits/digits-classifier_1000.npz" in text
    assert "table --name cqf_table1" in text


def test_the_paper_profile_plans_the_cifar10_ablation_at_the_papers_sizes(tmp_path):
    repo = copy_repo(tmp_path)
    result = snakemake(repo, "--profile", "profiles/paper", "-n", "-p", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    commands = _cqf_train_commands(text)
    assert {variant for variant, _ in commands} == set(VARIANTS)
    for command in commands.values():
        assert "--dataset cifar10 --data data/processed/cifar10/train.npz" in command and "--device cuda" in command
        arch = json.loads(re.search(r"--architecture '([^']+)'", command).group(1))
        assert (arch["latent_dim"], arch["base_channels"], arch["max_channels"]) == (128, 64, 512)  # Miyato et al.
        assert (arch["disc_base_channels"], arch["disc_max_channels"]) == (64, 512)
        assert (arch["flow_checkerboard_layers"], arch["flow_blocks"], arch["flow_hidden"]) == (3, 2, 32)
        assert arch["generator_output"] == "tanh"
        train = json.loads(re.search(r"--train-config '([^']+)'", command).group(1))
        assert (train["lr"], train["adamax_beta1"], train["adamax_beta2"]) == (0.002, 0.9, 0.999)  # appendix A
        assert (train["batch_size"], train["gp_coefficient"], train["adversarial_weight"], train["d_steps"]) == \
            (64, 100, 100, 1)
        assert train["steps"] == 100_000
    for variant in VARIANTS:
        assert re.search(rf"sample-cqf --checkpoint results/cqf/cifar10/{variant}/seed-0/ckpt_0100000.pt --n 10000 ",
                         text)
        assert f"evaluate --dataset cifar10 --model {variant} " in text
    assert "results/reference/cifar10/inception-v3_10000.npz" in text
    assert re.search(r"rule train_cqf:(?:\n .*)*\n\s+resources: .*gpu=1", text)
    for target in ("reports/tables/cqf_table1.csv", "reports/provenance/cqf_table1.json",
                   "reports/figures/cifar10_cqf_samples.png", "reports/figures/cifar10_cqf_curves.png"):
        assert target in text


def test_a_cqf_dataset_without_its_datasets_section_is_named(tmp_path):
    repo = copy_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["cqf"]["datasets"] = ["digits", "mnist"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(repo, "-n", "--cores", "1", timeout=120)
    assert result.returncode != 0
    assert "cqf.datasets lists 'mnist' but datasets.mnist is missing" in result.stdout + result.stderr


@pytest.mark.slow
def test_the_ci_profile_runs_the_cqf_targets(ci_run):
    for target in ("reports/tables/cqf_table1.md", "reports/figures/digits_cqf_samples.png",
                   "reports/figures/digits_cqf_curves.png"):
        assert (ci_run / target).exists(), target
    cells = load_table_records(ci_run / "reports/provenance", "cqf_table1")
    assert {c["model"] for c in cells if c["source"] == "ours"} == {*VARIANTS, "real data (test split)"}
    main(["audit", "--dir", str(ci_run / "reports/provenance"), "--root", str(ci_run)])
