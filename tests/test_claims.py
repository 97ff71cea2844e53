"""Claims and verdicts (aiqn.report.claims): the verdict flips with its inputs, the interval of the
difference against scipy, and paper/claims.yaml is well formed."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import scipy.stats

from aiqn.report.claims import Estimate, difference, evaluate_claims, load_claims, verdict
from repo_copy import REPO

CLAIM = {"id": "c", "paper": "p", "where": "w", "statement": "a beats b", "table": "t", "metric": "FID",
         "better": "lower", "a": {"model": "a"}, "b": {"model": "b"}, "kid": True, "paper_values": {"a": 1, "b": 2}}


def table(fid_a, fid_b, half=1.0, seeds=1):
    rows = []
    for model, value in (("a", fid_a), ("b", fid_b)):
        for seed in range(seeds):
            v = value + 0.1 * seed
            rows.append({"dataset": "d", "model": model, "metric": "FID", "value": v, "std": math.nan,
                         "low": v - half if seeds == 1 else math.nan, "high": v + half if seeds == 1 else math.nan,
                         "label": "FID (x)", "source": "ours"})
        rows.append({"dataset": "d", "model": model, "metric": "memorised (pixels)", "value": 0.05, "std": math.nan,
                     "low": math.nan, "high": math.nan, "label": "memorised", "source": "ours"})
    return pd.DataFrame(rows)


def test_the_verdict_flips_with_its_inputs():
    assert evaluate_claims([CLAIM], {"t": table(10, 20)}).verdict.item() == "holds"
    assert evaluate_claims([CLAIM], {"t": table(20, 10)}).verdict.item() == "reversed"
    assert evaluate_claims([CLAIM], {"t": table(10, 11, half=5)}).verdict.item() == "inconclusive"
    higher = {**CLAIM, "better": "higher"}
    assert evaluate_claims([higher], {"t": table(10, 20)}).verdict.item() == "reversed"
    row = evaluate_claims([CLAIM], {"t": table(10, 20)}).iloc[0]
    assert row.memorised_a == 0.05 and row.paper_a == 1 and row.difference == -10


def test_one_seed_interval_combines_the_two_standard_errors():
    a, b = Estimate(10.0, 1.0, (10.0,), "x"), Estimate(7.0, 2.0, (7.0,), "x")
    d, low, high = difference(a, b)
    z = scipy.stats.norm.ppf(0.975)
    assert (d, low, high) == pytest.approx((3.0, 3 - z * math.sqrt(5), 3 + z * math.sqrt(5)))
    assert difference(a, Estimate(7.0, None, (7.0,), "x"))[1:] == (None, None)
    assert verdict(None, None, "lower") == "inconclusive"


def test_several_seeds_give_scipys_paired_t_interval():
    per_a, per_b = (3.1, 2.7, 3.5, 2.9), (2.0, 2.2, 2.9, 1.8)
    a = Estimate(sum(per_a) / 4, None, per_a, "4 seeds")
    b = Estimate(sum(per_b) / 4, None, per_b, "4 seeds")
    _, low, high = difference(a, b)
    ci = scipy.stats.ttest_rel(per_a, per_b).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    frame = evaluate_claims([CLAIM], {"t": table(10, 20, seeds=3)})
    assert frame.noise.item() == "3 seeds" and len(frame.ours_a_per_seed.item()) == 3


def test_seeds_are_paired_by_seed_not_by_row_order_and_welch_without_common_seeds():
    per_a, per_b = {0: 3.1, 1: 2.7, 2: 3.5}, {0: 2.0, 1: 2.2, 2: 2.9}
    rows = [{"dataset": "d", "model": m, "metric": "FID", "value": v, "std": math.nan, "low": math.nan,
             "high": math.nan, "label": "FID (x)", "source": "ours", "seed": seed}
            for m, values in (("a", per_a), ("b", per_b)) for seed, v in values.items()]
    shuffled = pd.DataFrame(rows[:3] + rows[3:][::-1])  # b's seeds in the order 2, 1, 0
    row = evaluate_claims([CLAIM], {"t": shuffled}).iloc[0]
    ci = scipy.stats.ttest_rel(list(per_a.values()), list(per_b.values())).confidence_interval(0.95)
    assert (row.difference_low, row.difference_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    other = pd.DataFrame(rows[:3] + [{**r, "seed": r["seed"] + 10} for r in rows[3:]])  # no seed in common
    row = evaluate_claims([CLAIM], {"t": other}).iloc[0]
    welch = scipy.stats.ttest_ind(list(per_a.values()), list(per_b.values()), equal_var=False).confidence_interval(0.95)
    assert (row.difference_low, row.difference_high) == pytest.approx((welch.low, welch.high), rel=1e-9)


def test_b_is_the_row_that_as_named_group_points_at():
    """agave-ablation-kl: the ablation's row against the lambda it continued, whichever other lambdas the table has."""
    frame = table(1, 2)  # a: 1, b: 2
    lambdas = frame[frame.model == "b"].assign(model="AGAVE (lambda=2)")
    other = frame[frame.model == "b"].assign(model="AGAVE (lambda=1)", value=0.0, low=-1.0, high=1.0)
    ablation = frame[frame.model == "a"].assign(model="AGAVE (lambda=2), no auxiliary loss")
    claim = {**CLAIM, "a": {"model": r"AGAVE \(lambda=(?P<lam>[0-9.]+)\), no auxiliary loss"},
             "b": {"model": r"AGAVE \(lambda={lam}\)"}}
    row = evaluate_claims([claim], {"t": pd.concat([other, lambdas, ablation])}).iloc[0]
    assert (row.model_a, row.model_b, row.difference, row.verdict) == \
        ("AGAVE (lambda=2), no auxiliary loss", "AGAVE (lambda=2)", -1.0, "inconclusive")
    row = evaluate_claims([claim], {"t": pd.concat([other, lambdas, ablation.assign(model="AGAVE (lambda=1), "
                                                                                  "no auxiliary loss")])}).iloc[0]
    assert (row.model_b, row.difference) == ("AGAVE (lambda=1)", 1.0)


def test_a_claim_whose_rows_exist_nowhere_is_refused_with_the_rows_named():
    with pytest.raises(ValueError, match="claim c: no dataset of t has FID rows matching .*its rows: a, b"):
        evaluate_claims([{**CLAIM, "a": {"model": "pixelsnail"}}], {"t": table(1, 2)})


def test_the_projects_claims_file_is_well_formed(tmp_path):
    import re

    import yaml

    claims = load_claims(REPO / "paper/claims.yaml")
    models = list(yaml.safe_load((REPO / "params.yaml").read_text())["models"])
    for claim in claims:  # a Table 1 claim names models params.yaml defines (a run that lacks them leaves it out)
        if claim["table"] == "table1":
            assert all(any(re.fullmatch(claim[s]["model"], m) for m in models) for s in ("a", "b")), claim["id"]
    assert {c["table"] for c in claims} == {"table1", "aiqn_vae", "agave_table1", "cqf_table1"}
    assert len({c["id"] for c in claims}) == len(claims) >= 11
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims:\n  - {id: x, paper: p, where: w, statement: s, table: t, metric: FID, a: {}, b: {}, paper_values: {}}\n")
    with pytest.raises(ValueError, match=r"claims\[0\] \(x\) has no 'better'"):
        load_claims(bad)


def test_claims_are_also_judged_at_the_checkpoint_chosen_on_validation():
    final = table(10, 20, seeds=3)
    chosen = table(25, 20, seeds=3).assign(model=lambda f: f.model + " (chosen on validation)")
    frame = evaluate_claims([CLAIM], {"t": pd.concat([final, chosen])}).set_index("checkpoint")
    assert frame.loc["final", "verdict"] == "holds" and frame.loc["chosen on validation", "verdict"] == "reversed"
    assert frame.loc["chosen on validation", "model_a"] == "a (chosen on validation)"
    assert evaluate_claims([CLAIM], {"t": final}).checkpoint.tolist() == ["final"]  # no chosen rows: final only


def test_the_budget_curve_judges_every_checkpoint_like_the_final_one():
    from aiqn.report.claims import budget_curve

    steps = []
    for step, (fid_a, fid_b) in ((50, (30, 20)), (150, (20, 20.5)), (500, (10, 20))):
        part = table(fid_a, fid_b, seeds=3).assign(step=step)
        part.loc[part.metric == "FID", "value"] += [0.0, 0.3, -0.2, 0.1, -0.1, 0.05]  # seeds that do not move together
        steps.append(part)
    curve = budget_curve([{**CLAIM, "table": "table1"}], pd.concat(steps)).set_index("step")
    assert curve.verdict.to_dict() == {50: "reversed", 150: "inconclusive", 500: "holds"}
    last = evaluate_claims([CLAIM], {"t": steps[-1]}).iloc[0]
    assert curve.loc[500, "difference_low"] == pytest.approx(last.difference_low)
    fid = steps[-1][steps[-1].metric == "FID"]
    ci = scipy.stats.ttest_rel(fid[fid.model == "a"].value, fid[fid.model == "b"].value).confidence_interval(0.95)
    assert curve.loc[500, "half_width"] == pytest.approx((ci.high - ci.low) / 2)  # what the seeds can resolve


def test_a_run_without_a_claims_models_leaves_that_claim_out_and_a_typo_is_still_refused():
    from aiqn.report.claims import claims_on_models

    cond = {**CLAIM, "id": "cond", "table": "table1", "a": {"model": "pixelcnn_cond"}, "b": {"model": "pixelcnn"}}
    head = {**CLAIM, "id": "head", "table": "table1", "a": {"model": "pixeliqn"}, "b": {"model": "pixelcnn"}}
    other = {**CLAIM, "id": "other", "table": "agave", "a": {"model": "AGAVE.*"}}
    kept, left_out = claims_on_models([cond, head, other], "table1", ["pixelcnn", "pixeliqn"])
    assert [c["id"] for c in kept] == ["head", "other"] and left_out == ["cond"]
    with pytest.raises(ValueError, match=r"claim c: no dataset of t has FID rows matching both \{'model': 'pixelsnail'\}"):
        evaluate_claims([{**CLAIM, "a": {"model": "pixelsnail"}}], {"t": table(1, 2)})  # a typo: still an error
