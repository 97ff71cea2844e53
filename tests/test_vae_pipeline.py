"""The AIQN-VAE in the pipeline (rules/vae.smk, aiqn.methods.aiqn_vae.verbs): the verbs end to end on tiny digits
models (train-vae -> sample-vae for each row -> evaluate -> table -> provenance -> vae-figures),
an interrupted train-vae resumes to the same checkpoint, the paper profile plans the CelebA 64x64
jobs with the paper's sizes, and a vae.datasets entry without a datasets section is named."""

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
from aiqn.report.provenance import load_table_records, missing_fields
from aiqn.core.io import read_json
from repo_copy import comparison_labels, copy_repo, digits_scoring, repo_layout, snakemake

ARCHITECTURE = {"latent_dim": 4, "base_channels": 8, "max_channels": 16, "aiqn_hidden": 32, "aiqn_layers": 2}
AIQN_VAE = {"posterior_variance": 0.1, "kl_weight": 0.5}
# file name -> (table row, trained variant, sample-vae --latents): the rows of rules/vae.smk
ROWS = {"vae": ("vae", "vae", "prior"), "aiqn-vae": ("aiqn-vae", "aiqn-vae", "aiqn"),
        "aiqn-vae-gaussian-prior": ("aiqn-vae (gaussian prior)", "aiqn-vae", "prior")}


def train_vae_args(variant: str, train: dict, state: str, out: str, data) -> list[str]:
    args = ["train-vae", "--dataset", "digits", "--data", str(data), "--variant", variant,
            "--architecture", json.dumps(ARCHITECTURE), "--train-config", json.dumps(train),
            "--state-dir", state, "--out-dir", out, "--device", "cpu", "--no-progress"]
    return args + (["--aiqn-vae-config", json.dumps(AIQN_VAE)] if variant == "aiqn-vae" else [])


@pytest.fixture(scope="module")
def run(digits_dir, tmp_path_factory):
    """The rules' commands, in-process, in a folder laid out like the repository."""
    root = tmp_path_factory.mktemp("vae_run")
    with repo_layout(root, digits_dir) as data:
        extractor, reference, comparison = digits_scoring(data)
        train = {"steps": 12, "batch_size": 16, "lr": 3e-3, "ema_rate": 0.5, "checkpoint_steps": [6], "seed": 0}
        for variant in ("vae", "aiqn-vae"):
            main(train_vae_args(variant, train, f"state/vae/digits/{variant}", f"results/vae/digits/{variant}",
                                f"{data}/train.npz"))
        metrics = []
        for row, (name, variant, latents) in ROWS.items():
            checkpoint = f"results/vae/digits/{variant}/ckpt_0000012.pt"
            samples = f"results/vae/digits/samples/{row}.npz"
            main(["sample-vae", "--checkpoint", checkpoint, "--latents", latents, "--n", "60", "--seed", "1",
                  "--batch-size", "25", "--device", "cpu", "--out", samples])
            metrics.append(f"results/vae/digits/metrics/{row}.json")
            main(["evaluate", *extractor, *comparison, "--dataset", "digits", "--model", name, "--samples", samples,
                  "--checkpoint", checkpoint, "--reference", reference, "--test", f"{data}/test.npz",
                  "--dataset-meta", f"{data}/meta.json", "--splits", "2", "--final", "--rule", "score_vae",
                  "--wildcards", f"dataset=digits,row={row}", "--out", metrics[-1]])
        paper = "paper/aiqn_vae.csv"
        os.makedirs("paper")
        shutil.copy2(os.path.join(os.path.dirname(__file__), "..", paper), paper)
        main(["table", "--name", "aiqn_vae", "--title", "AIQN-VAE", "--caption", "test", "--paper-heading",
              "Paper: no numbers", "--metrics", *metrics, "--paper", paper, "--out-dir", "reports/tables",
              "--provenance", "reports/provenance/aiqn_vae.json"])
        main(["vae-figures", "--dataset", "digits", "--real", f"{data}/test.npz", "--samples",
              *[f"{name}=results/vae/digits/samples/{row}.npz" for row, (name, _, _) in ROWS.items()],
              "--train-logs", *[f"{v}=results/vae/digits/{v}/train_log.csv" for v in ("vae", "aiqn-vae")],
              "--grid-n", "16", "--grid-out", "reports/figures/digits_aiqn_vae.png",
              "--loss-out", "reports/figures/digits_aiqn_vae_loss.png"])
        yield root


def test_train_vae_publishes_hard_links_of_its_state_and_a_record(run):
    for variant, aiqn in (("vae", False), ("aiqn-vae", True)):
        out, state = run / "results/vae/digits" / variant, run / "state/vae/digits" / variant
        for name in ("ckpt_0000012.pt", "train_log.csv", "config.json"):
            assert os.path.samefile(out / name, state / name), name
        assert not (out / "ckpt_0000006.pt").exists()  # only the final checkpoint is an output
        record = read_json(out / "train.json")
        assert record["variant"] == variant and record["step"] == 12 and record["seed"] == 0
        assert record["config"]["train"]["aiqn"] is aiqn
        model = record["config"]["model"]
        assert (model["fixed_posterior_variance"], model["kl_weight"]) == ((0.1, 0.5) if aiqn else (None, 1.0))
        assert record["checkpoint"]["path"] == f"results/vae/digits/{variant}/ckpt_0000012.pt"
        assert {"packages", "python"} <= set(record["environment"]) and "host" not in record["environment"]
        assert "host" in read_json(out / "train.json.runinfo.json")  # where it ran: in the run facts


def test_each_row_is_sampled_from_its_own_latents(run):
    images = {}
    for row, (_, variant, latents) in ROWS.items():
        path = run / f"results/vae/digits/samples/{row}.npz"
        with np.load(path) as arrays:
            images[row] = arrays["images"]
        assert images[row].shape == (60, 1, 8, 8) and images[row].dtype == np.uint8 and images[row].max() <= 16
        meta = read_json(f"{path}.json")
        assert (meta["n"], meta["seed"], meta["latents"], meta["weights"]) == (60, 1, latents, "ema")
        assert meta["checkpoint"]["path"].endswith(f"{variant}/ckpt_0000012.pt") and len(meta["checkpoint"]["sha256"]) == 64
    # the same decoder with two latent sources
    assert not np.array_equal(images["aiqn-vae"], images["aiqn-vae-gaussian-prior"])


def test_metric_files_name_the_extractor_and_carry_complete_provenance(run):
    for row, (name, variant, _) in ROWS.items():
        record = read_json(run / f"results/vae/digits/metrics/{row}.json")
        assert record["model"] == name and record["final"] and record["step"] == 12 and record["n_samples"] == 60
        labels = {m["metric"]: m["label"] for m in record["metrics"]}
        n_train, n_test = (len(np.load(run / f"data/processed/digits/{s}.npz")["images"]) for s in ("train", "test"))
        assert labels == {"FID": "FID (digits-classifier, 60 samples vs 200 train)",
                          "IS": "IS (digits-classifier, 60 samples, 2 splits)", **comparison_labels(n_train, n_test)}
        provenance = record["provenance"]
        assert missing_fields({**provenance, "metrics_file": {"path": "x"}}) == []
        assert provenance["rule"] == {"name": "score_vae", "wildcards": {"dataset": "digits", "row": row}}
        assert provenance["checkpoint"]["path"] == f"results/vae/digits/{variant}/ckpt_0000012.pt"
        assert provenance["config"]["train"]["aiqn"] is (variant == "aiqn-vae")


def test_table_and_provenance_command(run, capsys):
    table = pd.read_csv(run / "reports/tables/aiqn_vae.csv")
    assert set(table.model) == {name for name, _, _ in ROWS.values()} and set(table.source) == {"ours"}
    cells = load_table_records(run / "reports/provenance", "aiqn_vae")  # table_provenance accepted every cell
    assert len(cells) == len(table) == 3 * 8 and all(c["record"]["table_rule"] == "aiqn_vae" for c in cells)
    md = (run / "reports/tables/aiqn_vae.md").read_text()
    assert "aiqn-vae (gaussian prior)" in md and "Paper: no numbers" in md and "_no records_" in md
    cwd = os.getcwd()
    os.chdir(run)
    try:
        capsys.readouterr()
        main(["provenance", "aiqn_vae", "--row", "aiqn-vae (gaussian prior)", "--metric", "FID"])
    finally:
        os.chdir(cwd)
    text = capsys.readouterr().out
    for expected in ("results/vae/digits/aiqn-vae/ckpt_0000012.pt", "results/vae/digits/samples/aiqn-vae-gaussian-prior.npz",
                     "fixed_posterior_variance=0.1", "score_vae", "step 12, ema weights"):
        assert expected in text


def test_figures_are_written(run):
    for name in ("digits_aiqn_vae.png", "digits_aiqn_vae_loss.png"):
        assert (run / "reports/figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = read_json(run / "reports/figures/digits_aiqn_vae.png.json")
    assert [panel["name"] for panel in record["panels"]] == ["vae", "aiqn-vae", "aiqn-vae (gaussian prior)"]


def test_an_interrupted_train_vae_resumes_to_the_same_checkpoint(digits_dir, tmp_path):
    """Kill the job after its step-3 checkpoint (here: remove the later state and the outputs, as
    Snakemake does to a failed job's outputs); the rerun resumes from step 3, bit for bit."""
    train = {"steps": 6, "batch_size": 8, "checkpoint_steps": [3], "seed": 2}
    data = digits_dir / "train.npz"
    runs = {}
    for name in ("straight", "resumed"):
        state, out = str(tmp_path / name / "state"), str(tmp_path / name / "out")
        main(train_vae_args("aiqn-vae", train, state, out, data))
        runs[name] = (tmp_path / name / "state", tmp_path / name / "out")
    state, out = runs["resumed"]
    (state / "ckpt_0000006.pt").unlink()  # the run "died" between steps 3 and 6
    shutil.rmtree(out)
    main(train_vae_args("aiqn-vae", train, str(state), str(out), data))
    a, b = (torch.load(runs[name][1] / "ckpt_0000006.pt", weights_only=False) for name in ("straight", "resumed"))
    for key in ("model", "ema", "aiqn", "aiqn_ema"):
        for param in a[key]:
            assert torch.equal(a[key][param], b[key][param]), f"{key}.{param}"
    logs = [pd.read_csv(runs[name][1] / "train_log.csv") for name in ("straight", "resumed")]
    assert logs[0]["step"].tolist() == logs[1]["step"].tolist() == list(range(1, 7))
    assert logs[0]["loss"].tolist() == logs[1]["loss"].tolist()


def test_sampling_the_aiqn_of_a_plain_vae_is_refused(run):
    with pytest.raises(SystemExit, match="has no AIQN"):
        main(["sample-vae", "--checkpoint", str(run / "results/vae/digits/vae/ckpt_0000012.pt"), "--latents", "aiqn",
              "--n", "2", "--device", "cpu", "--out", str(run / "x.npz")])


# ---------------------------------------------------------------------------- Snakemake plans


def _vae_train_commands(text: str) -> dict[tuple[str, int], str]:
    """train-vae commands by variant and the seed of their out-dir: {("vae", 0): command, ...}."""
    return {(m.group(1), int(m.group(2))): m.group(0) for m in
            re.finditer(r"train-vae --dataset \S+ .*--variant (\S+) .*--out-dir \S+/seed-(\d+) .*", text)}


def test_the_paper_profile_plans_the_celeba64_aiqn_vae_at_the_papers_sizes(tmp_path):
    repo = copy_repo(tmp_path)
    result = snakemake(repo, "--profile", "profiles/paper", "-n", "-p", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    commands = _vae_train_commands(text)
    seeds = yaml.safe_load((repo / "profiles/paper/params.yaml").read_text())["run"]["seeds"]
    assert set(commands) == {(variant, seed) for variant in ("vae", "aiqn-vae") for seed in seeds}
    for (variant, seed), command in commands.items():
        assert "--dataset celeba64 --data data/processed/celeba64/train.npz" in command
        architecture = json.loads(re.search(r"--architecture '([^']+)'", command).group(1))
        assert (architecture["latent_dim"], architecture["base_channels"], architecture["max_channels"]) == (32, 64, 512)
        assert (architecture["aiqn_hidden"], architecture["aiqn_layers"]) == (512, 3)
        train = json.loads(re.search(r"--train-config '([^']+)'", command).group(1))
        assert train["steps"] == 200_000 and train["batch_size"] == 64 and train["kappa"] == 0.002
        assert train["ema_rate"] == 0.9999 and "--device cuda" in command and train["seed"] == seed
    assert json.loads(re.search(r"--aiqn-vae-config '([^']+)'", commands["aiqn-vae", 0]).group(1)) == AIQN_VAE
    assert "--aiqn-vae-config" not in commands["vae", 0]
    for row, latents in (("vae", "prior"), ("aiqn-vae", "aiqn"), ("aiqn-vae-gaussian-prior", "prior")):
        for seed in seeds:
            assert re.search(rf"sample-vae --checkpoint results/vae/celeba64/\S+/seed-{seed}/ckpt_0200000.pt"
                             rf" --latents {latents} --n 10000 .* --out results/vae/celeba64/samples/{row}/seed-{seed}.npz",
                             text), (row, seed)
    assert "evaluate --dataset celeba64 --model 'aiqn-vae (gaussian prior)'" in text
    assert "results/reference/celeba64/inception-v3_10000.npz" in text
    assert re.search(r"rule train_vae:(?:\n .*)*\n\s+resources: .*gpu=1", text)
    for target in ("reports/tables/aiqn_vae.csv", "reports/provenance/aiqn_vae.json",
                   "reports/figures/celeba64_aiqn_vae.png", "reports/figures/celeba64_aiqn_vae_loss.png"):
        assert target in text


def test_a_vae_dataset_without_its_datasets_section_is_named(tmp_path):
    repo = copy_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["vae"]["datasets"] = ["digits", "mnist"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(repo, "-n", "--cores", "1", timeout=120)
    assert result.returncode != 0
    assert "vae.datasets lists 'mnist' but datasets.mnist is missing" in result.stdout + result.stderr
