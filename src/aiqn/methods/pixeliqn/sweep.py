"""Hyperparameter sweeps (Ostrovski et al. 2018, appendix): search spaces, seeded draws of
configurations, successive-halving rungs and the choice of the best configuration.

The paper drew 500 configurations per model, trained each 100K steps on CIFAR-10, scored each
by FID on 2,500 samples and trained the best one in full. Here the same procedure is data:

- a search space per model (params.yaml `sweep.spaces.<model>`): each hyperparameter is
  `{choice: [...]}` or `{log_uniform: [low, high]}`; the names the training understands are
  optimizer, lr, schedule (constant | decaying), kappa and loss (huber | quantile: kappa = 0);
- `draw_configs` turns a space, N and a seed into a table (one row per trial, `t000`, ...),
  the same table for the same inputs on any machine; its draws are common random numbers: every
  model's trial t007 has the same optimizer and lr where their spaces define them alike, so the
  heads are compared on the same draws (the paper: "the same number (500) of hyperparameter
  configurations evaluated for both models"), and only what one head alone has (the PixelCNN's
  schedule, PixelIQN's kappa and loss) is drawn on top;
- `rung_budgets` gives the training steps of each rung of successive halving (one rung, the
  full budget, for an exhaustive sweep); `promote` keeps the best 1/eta of a rung;
- `train_overrides` turns a row into the TrainConfig fields it sets, for a trial's budget or the
  full training (a decaying schedule keeps the paper's 120K/60K/rest proportions of 300K).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

SCHEDULES = ("constant", "decaying")
LOSSES = ("huber", "quantile")
COLUMNS = ("trial", "optimizer", "lr", "schedule", "kappa", "loss")
# the paper's decaying PixelCNN schedule on CIFAR-10: 1e-4 for 120K, 3e-5 for 60K, 1e-5 after, of 300K
DECAY_FRACTIONS = (0.4, 0.6)
DECAY_FACTORS = (1.0, 0.3, 0.1)
LOWER_IS_BETTER = {"FID": True, "IS": False, "bits/dim": True}


def trial_name(index: int) -> str:
    """`t007` for index 7: the {trial} wildcard."""
    return f"t{index:03d}"


def _draw(spec: dict, rng: np.random.Generator):
    """One value of a search dimension from one uniform number of `rng` (so that two spaces with
    the same dimension map the same number to the same value)."""
    u = rng.random()
    if "choice" in spec:
        options = list(spec["choice"])
        return options[min(int(u * len(options)), len(options) - 1)]
    if "log_uniform" in spec:
        low, high = spec["log_uniform"]
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    raise ValueError(f"a search dimension needs 'choice' or 'log_uniform', got {spec}")


def draw_rng(seed: int, index: int, name: str) -> np.random.Generator:
    """The stream of one hyperparameter of one trial: seeded by (sweep seed, trial index, name) and
    by nothing model-specific, so every model's trial `t007` draws the same lr, optimizer, ... from
    the same space (common random numbers), whatever other dimensions its space has."""
    return np.random.default_rng([seed, index, zlib.crc32(name.encode())])


def draw_configs(space: dict, n: int, seed: int, model: str) -> list[dict]:
    """N configurations drawn from `space`: a list of rows with the keys of COLUMNS (kappa is None
    for a model without one, 0 with the plain quantile loss). Each value of trial i comes from
    draw_rng(seed, i, name): two models whose spaces share a dimension get equal draws of it."""
    unknown = set(space) - set(COLUMNS[1:])
    if unknown:
        raise ValueError(f"sweep space of {model}: unknown hyperparameters {sorted(unknown)}; known: {COLUMNS[1:]}")
    rows = []
    for index in range(n):
        drawn = {name: _draw(space[name], draw_rng(seed, index, name)) for name in COLUMNS[1:] if name in space}
        schedule = drawn.get("schedule", "constant")
        loss = drawn.get("loss")  # None: the model has no quantile loss (PixelCNN)
        if schedule not in SCHEDULES or loss not in (*LOSSES, None):
            raise ValueError(f"sweep space of {model}: schedule must be in {SCHEDULES}, loss in {LOSSES}")
        kappa = drawn.get("kappa")
        rows.append({"trial": trial_name(index), "optimizer": drawn.get("optimizer", "adam"),
                     "lr": float(drawn["lr"]), "schedule": schedule,
                     "kappa": 0.0 if loss == "quantile" else kappa, "loss": loss})
    return rows


def shared_dimensions(spaces: dict[str, dict]) -> tuple[list[str], dict[str, list[str]]]:
    """What the models of a sweep share: (dimensions every space has with the same definition,
    {dimension: models whose definitions of it differ}). Only the first are common random numbers."""
    names = set.intersection(*(set(space) for space in spaces.values())) if spaces else set()
    same, differ = [], {}
    for name in (n for n in COLUMNS[1:] if n in names):
        definitions = {model: space[name] for model, space in spaces.items()}
        if all(d == next(iter(definitions.values())) for d in definitions.values()):
            same.append(name)
        else:
            differ[name] = sorted(definitions)
    return same, differ


def train_overrides(row: dict, steps: int) -> dict:
    """The TrainConfig fields a configuration sets when trained for `steps` steps."""
    overrides = {"optimizer": row["optimizer"], "lr": float(row["lr"]), "lr_boundaries": [], "lr_values": []}
    if row["schedule"] == "decaying":
        overrides["lr_boundaries"] = [max(1, round(steps * f)) for f in DECAY_FRACTIONS]
        overrides["lr_values"] = [float(row["lr"]) * f for f in DECAY_FACTORS]
    if row.get("kappa") is not None and not (isinstance(row["kappa"], float) and math.isnan(row["kappa"])):
        overrides["kappa"] = float(row["kappa"])
    return overrides


def rung_budgets(steps: int, n_configs: int, eta: int, min_steps: int) -> list[int]:
    """Training steps at the end of each rung of successive halving: the full budget last, each
    earlier rung 1/eta of the next, as many rungs as halve N to one while no budget falls below
    `min_steps`. eta <= 1 (or one configuration) gives a single rung: the exhaustive sweep."""
    if eta <= 1 or n_configs <= 1:
        return [steps]
    rungs = 1 + int(math.floor(math.log(n_configs, eta) + 1e-9))
    budgets = [steps // eta ** (rungs - 1 - k) for k in range(rungs)]
    return [b for b in budgets if b >= min_steps] or [steps]


def survivors(n_configs: int, eta: int, rung: int) -> int:
    """How many configurations rung `rung` trains (rung 0: all)."""
    count = n_configs
    for _ in range(rung):
        count = max(1, math.ceil(count / eta))
    return count


def rank(results: list[dict], metric: str) -> list[dict]:
    """Finished trials best first by `metric`; failed ones last, in trial order."""
    lower = LOWER_IS_BETTER.get(metric, True)
    ok = [r for r in results if r.get("status") == "ok"]
    failed = [r for r in results if r.get("status") != "ok"]
    ok.sort(key=lambda r: (r["value"] if lower else -r["value"], r["trial"]))
    return ok + sorted(failed, key=lambda r: r["trial"])


def promote(results: list[dict], metric: str, keep: int) -> list[str]:
    """The trials a rung passes on: the best `keep` finished ones (fewer if fewer finished)."""
    return [r["trial"] for r in rank(results, metric) if r.get("status") == "ok"][:keep]
