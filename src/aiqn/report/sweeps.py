"""Sweep report: every trial of a sweep in a table (configuration, rung, metric, status, steps)
and a figure of the metric against the learning rate, coloured by optimizer (and against kappa
for PixelIQN), with the chosen configuration marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from aiqn.core.io import read_json, write_csv_atomic, write_text_atomic  # noqa: E402

COLUMNS = ["trial", "rung", "budget", "optimizer", "lr", "schedule", "kappa", "loss", "status", "metric", "value",
           "reason", "steps_trained", "chosen"]
OPTIMIZER_COLOURS = {"adam": "tab:blue", "rmsprop": "tab:orange", "sgd": "tab:green"}


def sweep_table(result_paths: list[str], selected_path: str) -> pd.DataFrame:
    """One row per trial and rung, best first within the last rung reached."""
    selected = read_json(selected_path)
    rows = []
    for path in result_paths:
        record = read_json(path)
        config = record["config"]
        rows.append({"trial": record["trial"], "rung": record["rung"], "budget": record["budget"],
                     "optimizer": config["optimizer"], "lr": config["lr"], "schedule": config["schedule"],
                     "kappa": config.get("kappa"), "loss": config.get("loss"), "status": record["status"],
                     "metric": record["metric"], "value": record["value"], "reason": record.get("reason"),
                     "steps_trained": record["steps_trained"],
                     "chosen": record["trial"] == selected["chosen"] and record["budget"] == selected["budgets"][-1]})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    lower = frame["metric"].iloc[0] != "IS" if len(frame) else True
    frame["_failed"] = frame["status"] != "ok"
    frame = frame.sort_values(["rung", "_failed", "value"], ascending=[False, True, lower], na_position="last")
    return frame.drop(columns="_failed").reset_index(drop=True)


def write_sweep_table(frame: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str,
                      selected: dict) -> None:
    """CSV (all columns) and Markdown (with a summary line of the choice and the cost)."""
    write_csv_atomic(frame, csv_path, index=False)
    shown = frame.copy()
    shown["lr"] = shown["lr"].map(lambda v: f"{v:.3g}")
    shown["kappa"] = shown["kappa"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    shown["value"] = shown["value"].map(lambda v: "–" if pd.isna(v) else f"{v:.4g}")
    summary = (f"Chosen: {selected['chosen']} ({selected['metric']} {selected['value']:.4g}); "
               f"{selected['n_trials']} configurations, rungs at {selected['budgets']} steps, "
               f"{selected['compute_steps']} training steps in all, {len(selected['failed'])} failed.")
    write_text_atomic(md_path, f"# {title}\n\n{summary}\n\n{shown.to_markdown(index=False)}\n")


def plot_sweep(frame: pd.DataFrame, out_path: str | Path, title: str) -> None:
    """Metric against learning rate (and kappa when it varies), coloured by optimizer; hollow
    markers for trials stopped at an earlier rung, x for failed ones, a star on the choice."""
    final = frame.groupby("trial")["rung"].transform("max") == frame["rung"]
    latest = frame[final]
    has_kappa = latest["kappa"].notna().any() and latest["kappa"].nunique() > 1
    panels = ["lr", "kappa"] if has_kappa else ["lr"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    last_rung = frame["rung"].max()
    metric = frame["metric"].iloc[0]
    finished = latest[latest["status"] == "ok"]
    ceiling = finished["value"].max() if len(finished) else 1.0
    for ax, x in zip(axes[0], panels):
        for optimizer, group in latest.groupby("optimizer"):
            colour = OPTIMIZER_COLOURS.get(optimizer, "tab:gray")
            ok = group[group["status"] == "ok"]
            full = ok[ok["rung"] == last_rung]
            early = ok[ok["rung"] < last_rung]
            ax.scatter(full[x], full["value"], color=colour, label=f"{optimizer}")
            ax.scatter(early[x], early["value"], facecolors="none", edgecolors=colour)
            bad = group[group["status"] != "ok"]
            ax.scatter(bad[x], [ceiling * 1.05] * len(bad), marker="x", color=colour)
        chosen = latest[latest["chosen"]]
        ax.scatter(chosen[x], chosen["value"], marker="*", s=250, facecolors="none", edgecolors="black",
                   label="chosen")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate" if x == "lr" else "kappa (Huber threshold)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="optimizer")
    note = "hollow: stopped at an earlier rung; x: failed or diverged (drawn at the top)"
    if has_kappa and (latest["kappa"] == 0).any():
        note += "; kappa 0 (plain quantile loss) lies off the log axis"
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def shared_draws_table(tables: dict[str, pd.DataFrame], spaces: dict[str, dict], shared: list[str]) -> pd.DataFrame:
    """The sweeps of one dataset side by side, one row per trial: the draws every model shares
    (`shared`, aiqn.methods.pixeliqn.sweep.shared_dimensions: common random numbers, refused unless
    equal for every model), then per model its own draws, its metric at each rung it reached and
    whether it was chosen. `tables`: {model: sweep_table(...)}; `spaces`: {model: its search space}."""
    models = list(tables)
    first = tables[models[0]].drop_duplicates("trial").set_index("trial")
    frame = pd.DataFrame(index=sorted(first.index))
    frame.index.name = "trial"
    for name in shared:
        frame[name] = first[name]
    for model, table in tables.items():
        draws = table.drop_duplicates("trial").set_index("trial")
        for name in shared:
            if not draws[name].reindex(frame.index).equals(frame[name]):
                raise ValueError(f"sweep of {model}: its {name} draws differ from {models[0]}'s; the shared "
                                 "draws must be common random numbers (aiqn.methods.pixeliqn.sweep.draw_configs)")
        for name in (n for n in ("schedule", "kappa", "loss") if n in spaces[model] and n not in shared):
            frame[f"{model} {name}"] = draws[name].reindex(frame.index)
        for rung, part in table.groupby("rung"):
            values = part.set_index("trial")["value"]
            frame[f"{model} {part['metric'].iloc[0]} @{int(part['budget'].iloc[0])}"] = values.reindex(frame.index)
        chosen = table[table["chosen"]]["trial"].tolist()
        frame[f"{model} chosen"] = [trial in chosen for trial in frame.index]
    return frame.reset_index()


def write_shared_draws(frame: pd.DataFrame, shared: list[str], csv_path: str | Path, md_path: str | Path,
                       dataset: str, differ: dict[str, list[str]]) -> None:
    """CSV and Markdown of shared_draws_table, with a caption saying what is shared and what is not."""
    write_csv_atomic(frame, csv_path, index=False)
    shown = frame.copy()
    for column in shown.columns:
        if column == "lr" or column.endswith("kappa"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        elif "@" in column:
            shown[column] = shown[column].map(lambda v: "–" if pd.isna(v) else f"{v:.4g}")
    own = ", ".join(f"{name} ({' vs '.join(models)} define it differently)" for name, models in differ.items())
    caption = (f"Each trial's {', '.join(shared)} are the same draws for every model (common random numbers); "
               "what a model alone has is drawn on top" + (f"; not shared: {own}" if own else "") +
               ". '@N': the metric after N steps (a rung of successive halving); – : the trial stopped earlier.")
    write_text_atomic(md_path, f"# {dataset}: the sweeps side by side\n\n{caption}\n\n{shown.to_markdown(index=False)}\n")
