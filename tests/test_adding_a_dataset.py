"""docs/adding-a-dataset.md, followed step by step in a temporary copy of the repository.

A new dataset, `tinyphotos` (16x16 RGB crops of scikit-learn's two bundled photos, 32 intensity
levels, 2 classes: which photo), is added the way the guide says: a module in src/aiqn/data/
that registers a DatasetSpec and fetches its raw files with `ensure_raw_file` (from a file://
URL, so nothing touches the network), one import line in src/aiqn/data/__init__.py, a
`datasets.tinyphotos` entry in params.yaml and `run.datasets` in the CI profile. The copy's
pipeline then runs for that dataset alone, and Table 1, its provenance and the audit must cover it.
"""

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from repo_copy import REPO, copy_repo, run_python as run


# Step 1 of the guide: the dataset module.
TINYPHOTOS = textwrap.dedent('''
    """tinyphotos: 16x16 RGB crops of scikit-learn's china.jpg and flower.jpg, 32 levels, 2 classes.

    Raw files are fetched into data/raw/tinyphotos/ by ensure_raw_file (here from the copy inside
    scikit-learn, by a file:// URL). Crops every `stride` pixels (default 32), centred; label 0 =
    china.jpg, 1 = flower.jpg; levels: the 8-bit values divided by 8 (0..31).
    """

    from __future__ import annotations

    from pathlib import Path

    import numpy as np
    import sklearn
    from PIL import Image
    from sklearn.model_selection import train_test_split

    from aiqn.data.download import ensure_raw_file
    from aiqn.data.registry import DatasetSpec, Source, register

    BUNDLED = Path(sklearn.__file__).parent / "datasets" / "images"
    SOURCES = (
        Source(filename="china.jpg", url=(BUNDLED / "china.jpg").as_uri(),
               sha256="8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
        Source(filename="flower.jpg", url=(BUNDLED / "flower.jpg").as_uri(),
               sha256="a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    )
    SIZE, LEVELS = 16, 32


    def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
        stride = int(options.get("stride", 32))
        images, labels, raw_files = [], [], []
        for label, source in enumerate(SOURCES):
            path = ensure_raw_file(source, raw_dir)  # verified sha256; downloaded when absent
            with Image.open(path) as image:
                photo = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
            height, width = photo.shape[:2]
            rows, cols = (height - SIZE) // stride + 1, (width - SIZE) // stride + 1
            top = (height - ((rows - 1) * stride + SIZE)) // 2
            left = (width - ((cols - 1) * stride + SIZE)) // 2
            for r in range(rows):
                for c in range(cols):
                    y, x = top + r * stride, left + c * stride
                    images.append(photo[y : y + SIZE, x : x + SIZE].transpose(2, 0, 1) // (256 // LEVELS))
                    labels.append(label)
            raw_files.append({"path": str(path), "sha256": source.sha256, "url": source.url})
        images = np.stack(images).astype(np.uint8)  # (N, 3, 16, 16), values 0..31
        labels = np.asarray(labels, dtype=np.int64)
        train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=options["test_fraction"],
                                               random_state=options["split_seed"], stratify=labels)
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
        provenance = {
            "raw_files": raw_files,
            "source": f"{SIZE}x{SIZE} crops at stride {stride} of scikit-learn's sample photos",
            "split": {"test_fraction": options["test_fraction"], "split_seed": options["split_seed"]},
        }
        train = {"images": images[train_idx], "labels": labels[train_idx]}
        test = {"images": images[test_idx], "labels": labels[test_idx]}
        return train, test, provenance


    SPEC = register(
        DatasetSpec(name="tinyphotos", channels=3, height=SIZE, width=SIZE, levels=LEVELS, num_classes=2,
                    prepare=prepare, sources=SOURCES,
                    description="16x16 crops of sklearn's sample photos, 32 levels; label = photo",
                    options=("test_fraction", "split_seed", "stride"))
    )
''').lstrip()


def add_tinyphotos(repo: Path) -> None:
    """Steps 1-3 of docs/adding-a-dataset.md, applied to the copy."""
    data = repo / "src/aiqn/data"
    # 1. the module that registers the dataset
    (data / "tinyphotos.py").write_text(TINYPHOTOS)
    # 2. the import line that registers it when aiqn.data is imported
    init = (data / "__init__.py").read_text()
    anchor = 'from aiqn.data import digits  # noqa: F401  (registers "digits")\n'
    assert anchor in init
    (data / "__init__.py").write_text(
        init.replace(anchor, anchor + 'from aiqn.data import tinyphotos  # noqa: F401  (registers "tinyphotos")\n'))
    # 3. params: datasets.tinyphotos in params.yaml, and run.datasets (here in the CI profile's overlay)
    params = (repo / "params.yaml").read_text()
    assert params.count("\ndatasets:\n") == 1
    (repo / "params.yaml").write_text(params.replace(
        "\ndatasets:\n", "\ndatasets:\n  tinyphotos:\n    test_fraction: 0.2\n    split_seed: 0\n    stride: 32\n"))
    profile_params = repo / "profiles/ci/params.yaml"
    overlay = yaml.safe_load(profile_params.read_text())
    overlay["run"] = {**overlay.get("run", {}), "datasets": ["tinyphotos"], "seeds": [0]}  # one seed: the CI run tests two
    overlay["vae"] = {**overlay.get("vae", {}), "datasets": []}  # the AIQN-VAE's own list (digits in CI): off here
    overlay["agave"] = {**overlay.get("agave", {}), "datasets": []}  # AGAVE's own list (digits in CI): off here
    overlay["cqf"] = {**overlay.get("cqf", {}), "datasets": []}  # CQF's own list (digits in CI): off here
    profile_params.write_text(yaml.safe_dump(overlay, sort_keys=False))


@pytest.mark.slow
def test_a_new_dataset_added_by_the_guide_runs_end_to_end(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_repo(repo)
    add_tinyphotos(repo)

    # the schema accepts the entry and the DAG has every stage for it, and nothing for the others
    dry = run(repo, "-m", "snakemake", "--profile", "profiles/ci", "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    planned = dry.stdout + dry.stderr
    for rule in ("prepare_data", "train_classifier", "train_tinyphotos_pixelcnn", "train_tinyphotos_pixeliqn",
                 "score_tinyphotos_pixelcnn", "score_tinyphotos_pixeliqn", "reference_stats", "evaluate_real", "table1", "figures"):
        assert rule in planned, rule
    assert "dataset=tinyphotos" in planned and "dataset=digits" not in planned and "dataset=photos32" not in planned

    result = run(repo, "-m", "snakemake", "--profile", "profiles/ci", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    # prepared data and its raw files (fetched by ensure_raw_file into data/raw/tinyphotos)
    meta = json.loads((repo / "data/processed/tinyphotos/meta.json").read_text())
    assert meta["shape"] == [3, 16, 16] and meta["levels"] == 32 and meta["num_classes"] == 2
    assert meta["splits"]["test"]["n"] == 104  # the guide's 416 training crops: 15% held out as validation
    assert (meta["splits"]["train"]["n"], meta["splits"]["val"]["n"]) == (353, 63)
    assert sorted(p.name for p in (repo / "data/raw/tinyphotos").iterdir()) == ["china.jpg", "flower.jpg"]

    # Table 1: FID and IS for every model of run.models (bits/dim for the PixelCNNs) and the floor
    table = pd.read_csv(repo / "reports/tables/table1.csv")
    ours = table[table.source == "ours"]
    assert set(ours.dataset) == {"tinyphotos"}
    models = ("pixelcnn", "pixeliqn", "pixelcnn_cond", "pixeliqn_cond")  # tinyphotos has labels
    chosen = {f"{model} (chosen on validation)" for model in models}  # each seed's checkpoint by FID vs val
    assert set(ours.model) == {*models, *chosen, "real data (test split)"}
    for model in models:
        rows = ours[ours.model == model]
        assert {"FID", "IS"} <= set(rows.metric), model
        assert rows.value.notna().all() and (rows[rows.metric == "FID"].value >= 0).all()
        assert rows[rows.metric.isin(["FID", "IS"])].label.str.contains("tinyphotos-classifier").all()
    assert "bits/dim" in set(ours[ours.model == "pixelcnn"].metric)
    assert "tinyphotos" in json.loads((repo / "reports/metrics.json").read_text())["table1"]

    # provenance: a complete record per cell, down to the raw files
    cells = [c for c in json.loads((repo / "reports/provenance/table1.json").read_text()) if c["source"] == "ours"]
    assert len(cells) == len(ours) and {c["dataset"] for c in cells} == {"tinyphotos"}
    fid = next(c for c in cells if c["model"] == "pixeliqn" and c["metric"] == "FID")["record"]
    assert fid["checkpoint"]["path"] == "results/runs/tinyphotos/pixeliqn/seed-0/ckpt_0000150.pt"
    assert fid["reference"]["extractor"] == "tinyphotos-classifier"
    assert [r["path"] for r in fid["dataset"]["raw"]] == ["data/raw/tinyphotos/china.jpg",
                                                          "data/raw/tinyphotos/flower.jpg"]

    # figures, and the audit re-hashes every file the records name (raw files included)
    for figure in ("tinyphotos_samples.png", "tinyphotos_training_curves.png", "tinyphotos_loss.png"):
        assert (repo / "reports/figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    audit = run(repo, "-m", "aiqn", "audit", timeout=120)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]

    # nothing was added to the real repository
    assert not (REPO / "src/aiqn/data/tinyphotos.py").exists()
