"""Sweeps: seeded draws from a search space, successive-halving rungs, ranking with failures,
the choice, and one trial end to end (finished, diverged and failed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aiqn.methods.pixeliqn.sweep import (draw_configs, promote, rank, rung_budgets, shared_dimensions, survivors,
                                        train_overrides)
from aiqn.methods.pixeliqn.sweep_trial import read_configs, rung_decision, run_trial, selection, write_configs

IQN_SPACE = {"optimizer": {"choice": ["rmsprop", "adam", "sgd"]}, "lr": {"log_uniform": [1e-4, 1e-2]},
             "kappa": {"log_uniform": [1e-3, 1e-1]}, "loss": {"choice": ["huber", "quantile"]}}
CNN_SPACE = {"optimizer": {"choice": ["rmsprop", "adam", "sgd"]}, "lr": {"log_uniform": [1e-4, 1e-2]},
             "schedule": {"choice": ["constant", "decaying"]}}


def test_draws_are_seeded_and_stay_inside_the_space():
    rows = draw_configs(IQN_SPACE, 200, seed=0, model="pixeliqn")
    assert rows == draw_configs(IQN_SPACE, 200, seed=0, model="pixeliqn")
    assert rows != draw_configs(IQN_SPACE, 200, seed=1, model="pixeliqn")
    assert [r["trial"] for r in rows[:3]] == ["t000", "t001", "t002"]
    lrs = np.array([r["lr"] for r in rows])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-2
    # log-uniform: about half of the draws below the geometric mean of the bounds
    assert 0.35 < np.mean(lrs < 1e-3) < 0.65
    assert {r["optimizer"] for r in rows} == {"rmsprop", "adam", "sgd"}
    plain = [r for r in rows if r["loss"] == "quantile"]
    assert plain and all(r["kappa"] == 0.0 for r in plain)
    assert all(1e-3 <= r["kappa"] <= 1e-1 for r in rows if r["loss"] == "huber")
    assert all(r["schedule"] == "constant" for r in rows)  # PixelIQN: constant rates only


def test_both_heads_get_the_same_draws_of_what_they_share():
    """Common random numbers: trial i of every model has the same optimizer and lr (same space),
    whatever else its space draws; a dimension defined differently is not shared."""
    cnn = draw_configs(CNN_SPACE, 50, seed=4, model="pixelcnn")
    iqn = draw_configs(IQN_SPACE, 50, seed=4, model="pixeliqn")
    assert [(r["optimizer"], r["lr"]) for r in cnn] == [(r["optimizer"], r["lr"]) for r in iqn]
    assert len({r["lr"] for r in cnn}) == 50  # and they are draws, not one value
    # a trial's draws do not depend on how many trials are drawn, nor on the other dimensions
    alone = draw_configs({"lr": CNN_SPACE["lr"]}, 3, seed=4, model="x")
    assert [r["lr"] for r in alone] == [r["lr"] for r in cnn[:3]]
    assert shared_dimensions({"pixelcnn": CNN_SPACE, "pixeliqn": IQN_SPACE}) == (["optimizer", "lr"], {})
    narrow = {**IQN_SPACE, "lr": {"log_uniform": [1e-4, 1e-3]}}
    assert shared_dimensions({"pixelcnn": CNN_SPACE, "pixeliqn": narrow}) == (["optimizer"], {"lr": ["pixelcnn", "pixeliqn"]})
    moved = draw_configs(narrow, 50, seed=4, model="pixeliqn")
    assert all(a["lr"] != b["lr"] for a, b in zip(cnn, moved))
    # the same uniform number lands at the same quantile of each log-uniform range
    assert all(np.log(b["lr"] / 1e-4) / np.log(10) == pytest.approx(np.log(a["lr"] / 1e-4) / np.log(100))
               for a, b in zip(cnn, moved))


def test_the_side_by_side_report_shows_shared_draws_once_and_refuses_unequal_ones():
    import pandas as pd

    from aiqn.report.sweeps import shared_draws_table

    def table(rows, values):
        return pd.DataFrame([{**r, "rung": 0, "budget": 40, "metric": "FID", "value": v, "status": "ok",
                              "chosen": i == int(np.argmin(values))} for i, (r, v) in enumerate(zip(rows, values))])

    cnn, iqn = draw_configs(CNN_SPACE, 3, 0, "pixelcnn"), draw_configs(IQN_SPACE, 3, 0, "pixeliqn")
    spaces = {"pixelcnn": CNN_SPACE, "pixeliqn": IQN_SPACE}
    shared, _ = shared_dimensions(spaces)
    assert shared == ["optimizer", "lr"]
    frame = shared_draws_table({"pixelcnn": table(cnn, [3.0, 1.0, 2.0]), "pixeliqn": table(iqn, [5.0, 6.0, 4.0])},
                               spaces, shared)
    assert frame["lr"].tolist() == [r["lr"] for r in cnn]
    assert {"pixelcnn schedule", "pixeliqn kappa", "pixeliqn loss", "pixelcnn FID @40", "pixeliqn FID @40"} <= set(frame)
    assert frame["pixelcnn chosen"].tolist() == [False, True, False] and frame["pixeliqn chosen"].tolist() == [False, False, True]
    other = [{**r, "lr": r["lr"] * 2} for r in iqn]
    with pytest.raises(ValueError, match="pixeliqn: its lr draws differ from pixelcnn's"):
        shared_draws_table({"pixelcnn": table(cnn, [1, 2, 3]), "pixeliqn": table(other, [1, 2, 3])}, spaces, shared)


def test_the_default_sweeps_share_optimizer_and_lr_and_differ_only_where_the_paper_says():
    """params.yaml: PixelIQN's space is the PixelCNN's less the schedule (the paper: "constant learning
    rates only"), plus kappa and the loss."""
    import yaml
    from pathlib import Path

    spaces = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["sweep"]["spaces"]
    assert shared_dimensions(spaces) == (["optimizer", "lr"], {})
    assert set(spaces["pixelcnn"]) - set(spaces["pixeliqn"]) == {"schedule"}


def test_an_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match="momentum"):
        draw_configs({**CNN_SPACE, "momentum": {"choice": [0.9]}}, 2, 0, "pixelcnn")


def test_the_configs_table_round_trips(tmp_path):
    for space, model in ((CNN_SPACE, "pixelcnn"), (IQN_SPACE, "pixeliqn")):
        rows = draw_configs(space, 5, 3, model)
        write_configs(tmp_path / "configs.tsv", rows)
        assert read_configs(tmp_path / "configs.tsv") == rows
    assert all(row["loss"] is None and row["kappa"] is None for row in draw_configs(CNN_SPACE, 5, 3, "pixelcnn"))


def test_a_decaying_schedule_keeps_the_papers_proportions():
    row = {"optimizer": "rmsprop", "lr": 1e-4, "schedule": "decaying", "kappa": None}
    fields = train_overrides(row, 300_000)
    assert fields["lr_boundaries"] == [120_000, 180_000]
    assert fields["lr_values"] == pytest.approx([1e-4, 3e-5, 1e-5])
    assert "kappa" not in fields
    constant = train_overrides({**row, "schedule": "constant", "kappa": 0.01}, 1000)
    assert constant["lr_values"] == [] and constant["kappa"] == 0.01


def test_halving_rungs_and_survivors():
    assert rung_budgets(500, 9, 3, 1) == [55, 166, 500]
    assert rung_budgets(500, 9, 1, 1) == [500]            # eta 1: exhaustive
    assert rung_budgets(500, 27, 3, 50) == [55, 166, 500]  # the 18-step rung is dropped
    assert [survivors(9, 3, rung) for rung in range(3)] == [9, 3, 1]
    assert [survivors(10, 3, rung) for rung in range(3)] == [10, 4, 2]


def _result(trial, value, status="ok", rung=0, steps=10):
    return {"trial": trial, "value": value, "status": status, "rung": rung, "steps_trained": steps,
            "config": {"trial": trial}, "reason": None if status == "ok" else "NaN loss at step 3", "seconds": 1.0}


def test_ranking_puts_failures_last_and_follows_the_metrics_direction():
    results = [_result("t000", 5.0), _result("t001", None, "diverged"), _result("t002", 3.0), _result("t003", 4.0)]
    assert [r["trial"] for r in rank(results, "FID")] == ["t002", "t003", "t000", "t001"]
    assert [r["trial"] for r in rank(results, "IS")] == ["t000", "t003", "t002", "t001"]
    assert promote(results, "FID", 2) == ["t002", "t003"]
    assert promote([_result("t000", None, "failed")], "FID", 1) == []


def test_the_choice_is_the_best_of_the_last_rung_and_counts_the_compute():
    rung0 = [_result("t000", 5.0), _result("t001", 3.0), _result("t002", None, "failed")]
    rung1 = [_result("t001", 2.5, rung=1, steps=20)]
    decisions = [rung_decision(rung0, "FID", 1, 0, 10), rung_decision(rung1, "FID", 1, 1, 30)]
    assert decisions[0]["promoted"] == ["t001"]
    chosen = selection(decisions, rung0 + rung1, "FID")
    assert chosen["chosen"] == "t001" and chosen["value"] == 2.5
    assert chosen["compute_steps"] == 10 + 10 + 10 + 20 and chosen["failed"] == ["t002"]
    assert chosen["budgets"] == [10, 30]


def test_a_sweep_where_nothing_finished_says_why():
    rung0 = [_result("t000", None, "diverged")]
    with pytest.raises(RuntimeError, match="t000: NaN loss"):
        selection([rung_decision(rung0, "FID", 1, 0, 10)], rung0, "FID")


# ------------------------------------------------------------------------- one trial, for real


@pytest.fixture(scope="module")
def tiny(digits_dir):
    from aiqn.data import load_split
    from aiqn.nets import PixelCNNConfig

    images, labels = load_split(digits_dir / "train.npz")
    config = PixelCNNConfig(channels=1, height=8, width=8, levels=17, head="quantile", blocks=1, filter_size=3,
                            planes=8, output_planes=16)
    return config, images[:200], labels[:200]


def _run(tiny, tmp_path, row, rung=0, score=None):
    config, images, labels = tiny
    return run_trial(row=row, model_config=config, base_train={"batch_size": 8, "ema_rate": 0.9, "seed": 0},
                     sweep_steps=12, budgets=[4, 12], rung=rung, images=images, labels=labels,
                     state_dir=tmp_path / row["trial"], device="cpu", n_samples=6, sample_batch=6, sample_seed=1,
                     metric="FID", score=score or (lambda s: [{"metric": "FID", "value": float(s.mean()),
                                                               "label": "FID (mean pixel)"}]))


def test_a_trial_trains_to_its_rung_then_resumes_for_the_next(tiny, tmp_path):
    row = {"trial": "t000", "optimizer": "adam", "lr": 1e-3, "schedule": "constant", "kappa": 0.01, "loss": "huber"}
    first = _run(tiny, tmp_path, row, rung=0)
    assert first["status"] == "ok" and first["budget"] == 4 and first["steps_trained"] == 4
    assert math.isfinite(first["value"]) and first["train_config"]["lr"] == 1e-3
    second = _run(tiny, tmp_path, row, rung=1)
    assert second["status"] == "ok" and second["steps_trained"] == 8
    log_steps = (tmp_path / "t000" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in log_steps] == list(range(1, 13))  # resumed, not restarted


def test_a_diverging_trial_is_recorded_not_raised(tiny, tmp_path):
    row = {"trial": "t001", "optimizer": "sgd", "lr": 1e12, "schedule": "constant", "kappa": 0.01, "loss": "huber"}
    result = _run(tiny, tmp_path, row)
    assert result["status"] == "diverged" and not result["retry"]
    assert "loss" in result["reason"]


def test_a_transient_failure_is_recorded_for_a_retry(tiny, tmp_path):
    row = {"trial": "t002", "optimizer": "adam", "lr": 1e-3, "schedule": "constant", "kappa": 0.0, "loss": "quantile"}

    def out_of_memory(samples):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    result = _run(tiny, tmp_path, row, score=out_of_memory)
    assert result["status"] == "failed" and result["retry"]
    assert result["reason"].startswith("RuntimeError: CUDA out of memory")


def test_the_photos8_and_long_profiles_plan_the_headline_claim_on_both_datasets(tmp_path):
    """profiles/photos8: Table 1's four models and the fair sweep on digits and photos8, the budget curves
    and the side-by-side sweep reports; profiles/long: the claim's two models at 15,000 steps, compiled,
    while its sweep trials stay eager (a trial never repays a compile)."""
    from repo_copy import copy_repo, snakemake

    repo = copy_repo(tmp_path)
    planned = {}
    for profile in ("photos8", "long"):
        result = snakemake(repo, "--profile", f"profiles/{profile}", "--dry-run", "--printshellcmds", timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        planned[profile] = result.stdout
    for dataset in ("digits", "photos8"):
        for model in ("pixelcnn", "pixeliqn", "pixelcnn_cond", "pixeliqn_cond"):
            assert f"--out-dir results/runs/{dataset}/{model}/seed-2 " in planned["photos8"], (dataset, model)
        assert f"reports/figures/{dataset}_budget.png" in planned["photos8"]
        assert f"--csv reports/sweeps/shared/{dataset}.csv" in planned["photos8"]
    trainings = [line for line in planned["long"].splitlines() if " train --dataset " in line]
    trials = [line for line in planned["long"].splitlines() if " sweep-trial " in line]
    assert len(trainings) == 12 and all('"compile":true' in t and '"steps":15000' in t for t in trainings)
    assert len(trials) == 4 * 9 and all('"compile":false' in t for t in trials)
    assert "pixelcnn_cond" not in planned["long"] and "train-vae" not in planned["long"]
