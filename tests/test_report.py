"""Tests for aiqn.report: Table 1 assembly/rendering and the figure helpers (synthetic inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aiqn.report import (
    build_table1,
    image_grid,
    plot_class_grid,
    load_metric_records,
    plot_loss_curves,
    plot_sample_grids,
    plot_training_curves,
    write_table1,
)
from aiqn.report.figures import class_rows
from aiqn.report.summary import table_metrics
from aiqn.report.tables import TableText, over_seeds

PAPER_CSV = Path(__file__).resolve().parents[1] / "paper" / "aiqn_table1.csv"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics_json(path: Path, model: str, step, final: bool, fid: float, is_: float,
                  bpd: float | None = None, dataset: str = "digits", seed: int | None = None) -> str:
    n_ref = "360 test" if step is None else "1000 samples"
    metrics = [
        {"metric": "FID", "value": fid,
         "label": f"FID (digits-classifier, {n_ref} vs 1000 train)"},
        {"metric": "IS", "value": is_, "std": 0.2,
         "label": "IS (digits-classifier, 1000 samples, 10 splits)"},
    ]
    if bpd is not None:
        metrics.append({"metric": "bits/dim", "value": bpd,
                        "label": "bits/dim (digits test split, 17 levels)"})
    doc = {"dataset": dataset, "model": model, "step": step, "final": final, "seed": seed,
           "n_samples": 1000, "extractor": "digits-classifier", "n_reference": 1000,
           "metrics": metrics, "inputs": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def metric_files(tmp_path) -> list[str]:
    root = tmp_path / "metrics" / "digits"
    files = []
    for model, bpd in (("pixeliqn", None), ("pixelcnn", 1.9)):
        for step, fid, is_ in ((1000, 40.0, 4.0), (2000, 20.0, 6.0), (3000, 12.345, 7.1)):
            files.append(_metrics_json(root / model / f"{step:07d}.json", model, step,
                                       step == 3000, fid + (model == "pixelcnn"), is_,
                                       bpd if bpd is None else bpd + 1000 / step))
    files.append(_metrics_json(root / "real" / "real.json", "real data (test split)", None,
                               True, 1.5, 9.2))
    return files


def test_build_table1_keeps_final_and_paper_rows(metric_files):
    table = build_table1(metric_files, str(PAPER_CSV))
    for col in ("dataset", "model", "metric", "value", "std", "label", "source", "step",
                "metrics_file"):
        assert col in table.columns
    ours = table[table["source"] == "ours"]
    paper = table[table["source"] != "ours"]
    assert set(ours["step"].dropna()) == {3000}
    assert len(ours) == 2 + 3 + 2  # pixeliqn FID/IS, pixelcnn FID/IS/bpd, real FID/IS
    # rows in the order the metric files name the models (the calling rule's), the floor last
    assert list(pd.unique(ours["model"])) == ["pixeliqn", "pixelcnn", "real data (test split)"]
    reordered = build_table1(metric_files[3:6] + metric_files[:3] + metric_files[6:], str(PAPER_CSV))
    assert list(pd.unique(reordered[reordered["source"] == "ours"]["model"])) == [
        "pixelcnn", "pixeliqn", "real data (test split)"]
    assert paper["source"].str.startswith("paper").all()
    assert {"cifar10", "imagenet32"} == set(paper["dataset"])
    # ours first, then the paper
    assert (table["source"] == "ours").tolist() == [True] * len(ours) + [False] * len(paper)
    pix = paper[(paper["dataset"] == "cifar10") & (paper["model"] == "PixelIQN")]
    assert pix.set_index("metric")["value"].to_dict() == {"IS": 5.29, "FID": 49.46}


def test_write_table1_files(metric_files, tmp_path):
    table = build_table1(metric_files, str(PAPER_CSV))
    paths = write_table1(table, tmp_path / "out" / "tables")
    assert set(paths) == {"csv", "md", "tex"}
    for path in paths.values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0
    md = Path(paths["md"]).read_text()
    assert "Ours (this pipeline)" in md
    assert "Paper (Ostrovski et al. 2018, Table 1" in md
    assert md.index("Ours (this pipeline)") < md.index("Paper (Ostrovski")
    assert "12.35" in md  # our final FID, 2 decimals
    assert "7.10 ± 0.20" in md
    assert "49.46" in md.split("Paper (Ostrovski")[1]
    assert "49.46" not in md.split("Paper (Ostrovski")[0]
    back = pd.read_csv(paths["csv"])
    assert len(back) == len(table)


def test_latex_escapes_underscores(tmp_path):
    path = _metrics_json(tmp_path / "m.json", "pixel_iqn", 5, True, 3.0, 2.0,
                         dataset="my_data")
    table = build_table1([path], str(PAPER_CSV))
    tex = Path(write_table1(table, tmp_path / "t")["tex"]).read_text()
    assert r"pixel\_iqn" in tex and r"my\_data" in tex
    assert "pixel_iqn" not in tex.replace(r"\_", "")
    assert r"$\pm$" in tex
    assert r"\begin{tabular}" in tex and r"\caption{" in tex


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_shapes(channels):
    images = np.random.default_rng(0).integers(0, 17, size=(10, channels, 8, 6), dtype=np.uint8)
    grid = image_grid(images, levels=17, nrow=4)  # 4 per row -> 3 rows
    expected = (3 * 8 + 2, 4 * 6 + 3)
    if channels == 3:
        expected += (3,)
    assert grid.shape == expected
    assert grid.min() >= 0.0 and grid.max() <= 1.0
    first = grid[:8, :6] if channels == 1 else grid[:8, :6].transpose(2, 0, 1)
    np.testing.assert_allclose(np.squeeze(first), np.squeeze(images[0] / 16.0))


def test_image_grid_rejects_out_of_range():
    with pytest.raises(ValueError):
        image_grid(np.full((2, 1, 4, 4), 17, dtype=np.uint8), levels=17, nrow=2)


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_sample_grids_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    real = tmp_path / "test.npz"
    np.savez(real, images=rng.integers(0, 17, (80, 1, 8, 8), dtype=np.uint8),
             labels=np.zeros(80, dtype=np.int64))
    samples = {}
    for model in ("pixelcnn", "pixeliqn"):
        samples[model] = str(tmp_path / f"{model}.npz")
        np.savez(samples[model], images=rng.integers(0, 17, (70, 1, 8, 8), dtype=np.uint8))
    out = tmp_path / "figs" / "grid.png"
    plot_sample_grids(str(real), samples, 17, str(out), n=64, title="digits samples")
    _assert_png(out)


def test_plot_sample_grids_colour(tmp_path):
    rng = np.random.default_rng(2)
    real = tmp_path / "test.npz"
    np.savez(real, images=rng.integers(0, 256, (16, 3, 8, 8), dtype=np.uint8),
             labels=np.zeros(16, dtype=np.int64))
    s = tmp_path / "s.npz"
    np.savez(s, images=rng.integers(0, 256, (16, 3, 8, 8), dtype=np.uint8))
    out = tmp_path / "grid_rgb.png"
    plot_sample_grids(str(real), {"pixeliqn": str(s)}, 256, str(out), n=16)
    _assert_png(out)


def test_plot_training_curves_writes_png(metric_files, tmp_path):
    out = tmp_path / "figs" / "curves.png"
    plot_training_curves(metric_files, str(out), "digits")
    _assert_png(out)
    with pytest.raises(ValueError, match="no metric records"):
        plot_training_curves(metric_files, str(tmp_path / "x.png"), "cifar10")


def test_plot_loss_curves_writes_png(tmp_path):
    logs = {}
    for i, model in enumerate(("pixelcnn", "pixeliqn")):
        steps = np.arange(0, 500, 5)
        loss = (3.0 / (i + 1)) * np.exp(-steps / 200) + 0.1 * np.random.default_rng(i).random(100)
        logs[model] = str(tmp_path / f"{model}.csv")
        pd.DataFrame({"step": steps, "loss": loss, "lr": 1e-3}).to_csv(logs[model], index=False)
    out = tmp_path / "loss.png"
    plot_loss_curves(logs, str(out))
    _assert_png(out)


def test_load_metric_records_names_bad_file(tmp_path):
    bad = tmp_path / "results" / "bad.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"dataset": "digits", "model": "pixelcnn", "step": 1}))
    with pytest.raises(ValueError, match="bad.json") as info:
        load_metric_records([str(bad)])
    assert "metrics" in str(info.value)


def test_load_metric_records_columns(metric_files):
    frame = load_metric_records(metric_files)
    assert list(frame.columns) == ["dataset", "model", "step", "seed", "final", "metric", "value", "std", "low", "high",
                                   "label", "n_samples", "extractor", "source", "metrics_file"]
    assert (frame["source"] == "ours").all()
    real = frame[frame["model"] == "real data (test split)"]
    assert real["step"].isna().all() and real["final"].all()
    assert frame["metrics_file"].str.endswith(".json").all()


def test_class_conditional_curves_are_dotted_in_their_base_colour(metric_files, tmp_path):
    root = Path(metric_files[0]).parents[1]
    for step, fid in ((1000, 30.0), (2000, 15.0), (3000, 9.0)):
        metric_files.append(_metrics_json(root / "pixeliqn_cond" / f"{step:07d}.json", "pixeliqn_cond", step,
                                          step == 3000, fid, 8.0))
    fig = plot_training_curves(metric_files, str(tmp_path / "curves.png"), "digits",
                               base_of={"pixeliqn_cond": "pixeliqn"}, dotted={"pixeliqn_cond"})
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}  # the FID panel
    conditional, base = lines["pixeliqn_cond (class-conditional)"], lines["pixeliqn"]
    assert conditional.get_linestyle() == ":" and base.get_linestyle() == "-"
    assert conditional.get_color() == base.get_color() != lines["pixelcnn"].get_color()
    assert list(conditional.get_ydata()) == [30.0, 15.0, 9.0]


def test_class_rows_take_each_class_in_order_and_pad():
    labels = np.array([2, 0, 2, 1, 0, 2, -1])
    images = labels.reshape(-1, 1, 1, 1).clip(0) * 10 + np.arange(7).reshape(-1, 1, 1, 1)  # tags label and index
    classes, rows = class_rows(images, labels, per_class=2, max_classes=10)
    assert classes == [0, 1, 2]
    assert rows[:, :, 0, 0, 0].tolist() == [[1, 4], [13, 0], [20, 22]]  # class 1 has one sample: padded
    assert class_rows(images, labels, per_class=1, max_classes=2)[0] == [0, 1]
    with pytest.raises(ValueError, match="not from a class-conditional"):
        class_rows(images, np.full(7, -1), 2, 10)


def test_plot_class_grid_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "classes.png"
    plot_class_grid(rng.integers(0, 17, (40, 1, 8, 8)), rng.integers(0, 4, 40), 17, str(out), per_class=5,
                    class_names=["a", "b", "c", "d"], title="t")
    _assert_png(out)


def test_write_table1_under_another_name(metric_files, tmp_path):
    text = TableText(name="aiqn_vae", title="AIQN-VAE", caption="VAE samples vs AIQN-VAE samples",
                     paper_heading="Paper: no numbers")
    paths = write_table1(build_table1(metric_files, str(PAPER_CSV)), tmp_path, text)
    assert sorted(Path(p).name for p in paths.values()) == ["aiqn_vae.csv", "aiqn_vae.md", "aiqn_vae.tex"]
    md = Path(paths["md"]).read_text()
    assert md.startswith("# AIQN-VAE\n\nVAE samples vs AIQN-VAE samples") and "## Paper: no numbers" in md
    assert r"\label{tab:aiqn_vae}" in Path(paths["tex"]).read_text()


def _seed_files(tmp_path, fids: dict[str, list[float]]) -> list[str]:
    """Final metrics files of each model, one per training seed, and the floor."""
    files = [_metrics_json(tmp_path / m / f"seed-{seed}" / "0001500.json", m, 1500, True, fid, 7.0 + seed, seed=seed)
             for m, values in fids.items() for seed, fid in enumerate(values)]
    return files + [_metrics_json(tmp_path / "real.json", "real data (test split)", None, True, 1.5, 9.2)]


def test_several_seeds_give_per_seed_rows_and_a_mean_with_scipys_t_interval(tmp_path):
    fids = {"pixelcnn": [7.5, 9.0, 8.1], "pixeliqn": [18.0, 15.5, 21.2]}
    table = build_table1(_seed_files(tmp_path, fids), str(PAPER_CSV))
    ours = table[table["source"] == "ours"]
    fid = ours[(ours["metric"] == "FID") & (ours["model"] == "pixeliqn")]
    assert fid["seed"].tolist() == [0, 1, 2] and fid["value"].tolist() == fids["pixeliqn"]  # the long CSV: every seed
    mean = over_seeds(ours)
    row = mean[(mean["metric"] == "FID") & (mean["model"] == "pixeliqn")].iloc[0]
    values = fids["pixeliqn"]
    low, high = scipy_t_interval(values)
    assert (row.value, row.low, row.high, row.seeds) == pytest.approx((np.mean(values), low, high, 3))
    floor = mean[mean["model"] == "real data (test split)"]
    assert (floor["seeds"] == 0).all() and len(floor) == 2  # the floor has no seeds and is kept as it is
    paths = write_table1(table, tmp_path / "out")
    markdown = Path(paths["md"]).read_text()
    assert f"{np.mean(values):.2f} [{low:.2f}, {high:.2f}]" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| model"))
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
             for line in markdown.splitlines() if line.startswith("| pixel")}
    assert [c.strip() for c in header.split("|")[1:4]] == ["model", "step", "seeds"]
    assert cells["pixeliqn"][1:3] == ["1500", "3"]
    cell = table_metrics(table)["digits"]["pixeliqn"]["FID"]  # reports/metrics.json: the table's numbers, by metric
    assert (cell["value"], cell["low"], cell["high"], cell["seeds"]) == pytest.approx((np.mean(values), low, high, 3),
                                                                                     abs=1e-6)


def scipy_t_interval(values):
    import scipy.stats

    return scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy.stats.sem(values))


def test_two_records_of_the_same_seed_are_refused(tmp_path):
    files = _seed_files(tmp_path, {"pixelcnn": [7.5, 9.0]})
    twin = _metrics_json(tmp_path / "copy.json", "pixelcnn", 1500, True, 8.0, 7.0, seed=1)
    with pytest.raises(ValueError, match="several final records .*seed"):
        build_table1(files + [twin], str(PAPER_CSV))


def test_the_checkpoint_chosen_on_validation_is_each_seeds_lowest_fid_vs_val(tmp_path):
    """Table 1's '(chosen on validation)' rows: per seed, every metric of the step whose 'FID vs val' is lowest
    (not the lowest FID vs train); a model with one checkpoint gets none; the md lists each seed's step."""
    fid_vs_val = {0: {500: 9.0, 1000: 4.0, 1500: 6.0}, 1: {500: 8.0, 1000: 7.0, 1500: 5.0}}
    files = []
    for seed, by_step in fid_vs_val.items():
        for step, val in by_step.items():
            path = _metrics_json(tmp_path / f"seed-{seed}" / f"{step}.json", "pixelcnn", step, step == 1500,
                                 fid=100.0 - step / 100, is_=float(step), seed=seed)
            doc = json.loads(Path(path).read_text())
            doc["metrics"].append({"metric": "FID vs val", "value": val,
                                   "label": "FID (digits-classifier, 1000 samples vs 216 val)"})
            Path(path).write_text(json.dumps(doc))
            files.append(path)
    files.append(_metrics_json(tmp_path / "iqn.json", "pixeliqn", 1500, True, 20.0, 6.0, seed=0))
    table = build_table1(files, str(PAPER_CSV))
    chosen = table[table["model"] == "pixelcnn (chosen on validation)"]
    assert dict(zip(chosen[chosen.metric == "IS"].seed, chosen[chosen.metric == "IS"].step)) == {0: 1000, 1: 1500}
    assert sorted(chosen[chosen.metric == "IS"].value) == [1000.0, 1500.0] and chosen["final"].all()
    assert not table["model"].str.startswith("pixeliqn (").any()  # one checkpoint: nothing to choose
    final = table[(table["model"] == "pixelcnn") & (table["metric"] == "IS")]
    assert final["step"].tolist() == [1500, 1500]
    markdown = Path(write_table1(table, tmp_path / "out")["md"]).read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| pixelcnn (chosen on validation)"))
    assert [c.strip() for c in row.split("|")[2:4]] == ["1000/1500", "2"]
