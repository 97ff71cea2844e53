"""One trial of a sweep, and the decisions built on trials: a rung's promotions and the choice.

`run_trial` trains one drawn configuration to its rung's budget (resuming from the previous
rung's checkpoint in the trial's state folder: every rung trains the same TrainConfig, whose
`steps` is the sweep's full budget, and stops at the rung's budget), samples with the EMA
weights and scores the samples. It never raises for a failure of the configuration: a
non-finite loss is recorded as `diverged` (deterministic, so not retried), any other error
(e.g. CUDA out of memory) as `failed` with `retry: true`, and the sweep and the selection go
on with the other trials.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import torch

from aiqn.methods.pixeliqn.sweep import COLUMNS, promote, rank, train_overrides

log = logging.getLogger(__name__)


def write_configs(path: str | Path, rows: list[dict]) -> None:
    """The drawn configurations as a TSV table (one row per trial; kappa empty when unused)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "lr": repr(row["lr"]), "kappa": "" if row["kappa"] is None else repr(row["kappa"]),
                             "loss": row["loss"] or ""})


def read_configs(path: str | Path) -> list[dict]:
    """Rows of a configs.tsv (lr and kappa as floats; kappa and loss None when empty)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        row["lr"] = float(row["lr"])
        row["kappa"] = float(row["kappa"]) if row["kappa"] not in ("", None) else None
        row["loss"] = row["loss"] or None
    return rows


def config_row(path: str | Path, trial: str) -> dict:
    """The row of one trial; the error names the table and the trials it has."""
    rows = read_configs(path)
    for row in rows:
        if row["trial"] == trial:
            return row
    raise KeyError(f"{path} has no trial {trial!r}; it has {rows[0]['trial']}..{rows[-1]['trial']}")


def run_trial(
    *, row: dict, model_config, base_train: dict, sweep_steps: int, budgets: list[int], rung: int,
    images: np.ndarray, labels: np.ndarray | None, state_dir: str | Path, device: str,
    n_samples: int, sample_batch: int, sample_seed: int, score, metric: str,
) -> dict:
    """Train `row` to budgets[rung], sample, score with `score(images) -> metrics list`; return
    the trial's result record (status ok / diverged / failed, the metric value, the steps it
    trained; its wall seconds are the caller's to keep, beside the record: `aiqn.core.runinfo`)."""
    from aiqn.nets.sampling import generate
    from aiqn.core.loss_log import NonFiniteLoss
    from aiqn.methods.pixeliqn.train import TrainConfig, train
    from aiqn.nets import model_from_checkpoint

    budget, previous = budgets[rung], (budgets[rung - 1] if rung else 0)
    fields = {**base_train, **train_overrides(row, sweep_steps), "steps": sweep_steps, "checkpoint_steps": budgets}
    record = {"trial": row["trial"], "config": row, "rung": rung, "budget": budget,
              "steps_trained": budget - previous, "metric": metric, "value": None, "status": "ok",
              "reason": None, "retry": False}
    try:
        train_config = TrainConfig(**fields)
        record["train_config"] = {k: v for k, v in fields.items() if k != "checkpoint_steps"}
        checkpoints = train(model_config, train_config, images, state_dir, labels=labels, device=device,
                            stop_after=budget, progress=False)
        model = model_from_checkpoint(checkpoints[budget], use_ema=True, device=device)
        class_labels = None
        if model.config.num_classes:  # as in evaluation: labels drawn uniformly
            class_labels = torch.randint(model.config.num_classes, (n_samples,),
                                         generator=torch.Generator().manual_seed(sample_seed))
        samples = generate(model, n_samples, sample_batch, sample_seed, class_labels=class_labels, progress=False)
        metrics = score(samples)
        value = next(m["value"] for m in metrics if m["metric"] == metric)
        record.update(value=float(value), label=next(m["label"] for m in metrics if m["metric"] == metric),
                      checkpoint=str(checkpoints[budget]))
        if not math.isfinite(value):
            record.update(status="diverged", reason=f"{metric} is {value}")
    except NonFiniteLoss as error:  # a property of the configuration: rerunning gives the same
        record.update(status="diverged", reason=str(error))
    except Exception as error:  # noqa: BLE001 - e.g. out of memory: recorded, retried on the next run
        log.exception("trial %s failed", row["trial"])
        record.update(status="failed", reason=f"{type(error).__name__}: {error}", retry=True)
    return record


def rung_decision(results: list[dict], metric: str, keep: int, rung: int, budget: int) -> dict:
    """What a rung decided: its trials ranked, and the `keep` best finished ones promoted."""
    ranked = rank(results, metric)
    return {"rung": rung, "budget": budget, "metric": metric, "keep": keep,
            "ranking": [{"trial": r["trial"], "status": r["status"], "value": r["value"], "reason": r.get("reason")}
                        for r in ranked],
            "promoted": promote(results, metric, keep)}


def selection(decisions: list[dict], results: list[dict], metric: str) -> dict:
    """The chosen configuration: the best finished trial of the last rung; with the cost and
    every trial's outcome, for the report (the cost in steps; its seconds are in the run facts). Raises when no trial of the last rung finished."""
    last = decisions[-1]
    if not last["promoted"]:
        reasons = "; ".join(f"{r['trial']}: {r['reason']}" for r in last["ranking"])
        raise RuntimeError(f"no trial of the last rung finished ({reasons}); widen or move the search space")
    chosen = last["promoted"][0]
    best = next(r for r in results if r["trial"] == chosen and r["rung"] == last["rung"])
    return {"metric": metric, "chosen": chosen, "config": best["config"], "value": best["value"],
            "budgets": [d["budget"] for d in decisions],
            "compute_steps": int(sum(r["steps_trained"] for r in results)),
            "n_trials": len({r["trial"] for r in results}),
            "failed": sorted({r["trial"] for r in results if r["status"] != "ok"}),
            "decisions": decisions}
