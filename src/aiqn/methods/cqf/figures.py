"""CQF's training-curves figure: one panel per loss term, one line per variant."""

from __future__ import annotations

# (train_log.csv column, y label) of the panels of the training-curves figure
CURVES = (
    ("bpd", "coverage loss L_C (eq. 6) of a training batch,\nbits/dim (vae, cq, cqf)"),
    ("adversarial", "quality loss L_Q (eq. 7, unweighted):\n-mean discriminator logit on G(z)"),
    ("d_loss", "discriminator loss (penalty not included;\nln 4 = 1.39 at chance)"),
)


def plot_cqf_curves(logs: dict[str, str], out_png: str) -> None:
    """One panel per loss term, one line (moving average of the logged steps) per variant that has it."""
    from aiqn.core.io import read_csv
    from aiqn.report.figures import _new_figure, _save

    frames = {name: read_csv(path, "a training log").sort_values("step") for name, path in logs.items()}
    fig = _new_figure(4.8 * len(CURVES), 3.8)
    axes = fig.subplots(1, len(CURVES), squeeze=False)[0]
    for ax, (column, ylabel) in zip(axes, CURVES):
        for i, (name, frame) in enumerate(frames.items()):
            if column not in frame or frame[column].isna().all():
                continue
            window = max(1, min(50, len(frame) // 20))
            ax.plot(frame["step"], frame[column], color=f"C{i}", alpha=0.2, linewidth=0.6)
            ax.plot(frame["step"], frame[column].rolling(window, min_periods=1).mean(), color=f"C{i}",
                    linewidth=1.6, label=f"{name} (moving average of {window})")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    coverage = [f["bpd"].dropna() for f in frames.values() if "bpd" in f and f["bpd"].notna().any()]
    if coverage and max(c.max() for c in coverage) > 4 * min(c.min() for c in coverage) > 0:
        axes[0].set_yscale("log")  # the first steps are far higher than the last
    fig.suptitle("CQF: training curves of the Table 1 variants", fontsize=12)
    _save(fig, out_png)
