# Shared input functions and config slices. A rule reads only the params it needs, so that
# changing a sampling parameter re-samples without retraining.
import json

wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    model=r"[A-Za-z0-9_-]+",
    step=r"\d{7}",

PYTHON = "python -m aiqn"


def check_run_config():
    for name in config["run"]["datasets"]:
        if name not in config["datasets"]:
            raise ValueError(f"params.yaml: run.datasets lists {name!r} but datasets.{name} is missing")
    for name in config["run"]["models"]:
        if name not in config["models"]:
            raise ValueError(f"params.yaml: run.models lists {name!r} but models.{name} is missing")


check_run_config()


def as_json(obj):
    """Compact, key-sorted JSON for a shell argument (quoted with {params.x:q})."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def train_section(model):
    section = dict(config["models"][model]["train"])
    section.setdefault("seed", config.get("seed", 0))
    return section


def checkpoint_steps(model):
    """Zero-padded steps of the checkpoints a model keeps (the last step included)."""
    section = train_section(model)
    steps = sorted(set(section["checkpoint_steps"]) | {section["steps"]})
    return [f"{s:07d}" for s in steps]


def final_step(model):
    return checkpoint_steps(model)[-1]


def model_config_json(model):
    entry = config["models"][model]
    return as_json({"head": entry["head"], **entry["architecture"]})


def extractor_name(dataset):
    return f"{dataset}-classifier"


def reference_path(dataset):
    n = config["evaluation"]["n_reference"]
    return f"results/reference/{dataset}/{extractor_name(dataset)}_{n}.npz"


def metric_files(dataset):
    files = [f"results/metrics/{dataset}/real_test.json"]
    for model in config["run"]["models"]:
        files += expand("results/metrics/{dataset}/{model}/{step}.json", dataset=dataset, model=model,
                        step=checkpoint_steps(model))
    return files


def all_reports():
    targets = ["reports/tables/table1.csv", "reports/tables/table1.md", "reports/tables/table1.tex", "reports/metrics.json", "reports/provenance/table1.json"]
    for dataset in config["run"]["datasets"]:
        targets += [f"reports/figures/{dataset}_samples.png", f"reports/figures/{dataset}_training_curves.png",
                    f"reports/figures/{dataset}_loss.png", f"results/extractors/{dataset}/classifier.json"]
    return targets
