# Shared input functions and config slices. A rule reads only the params it needs, so that
# changing a sampling parameter re-samples without retraining.
import json

wildcard_constraints:
    dataset=r"[A-Za-z0-9-]+",  # no "_": file names join dataset and model with "_"
    model=r"[A-Za-z0-9_-]+",
    step=r"\d{7}",

PYTHON = "python -m aiqn"


INCEPTION_WEIGHTS = "data/raw/inception/weights-inception-2015-12-05-6726825d.pth"  # aiqn.metrics.inception


def models_for(dataset):
    """The models run on a dataset: run.models_per_dataset[dataset], else run.models."""
    return config["run"].get("models_per_dataset", {}).get(dataset, config["run"]["models"])


def run_pairs():
    """(dataset, model) of every model trained in this run, in config order."""
    return [(dataset, model) for dataset in config["run"]["datasets"] for model in models_for(dataset)]


def _merged(base, override):
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def model_definition(model):
    """models.<model>, with `variant_of` resolved: the base model's definition (as a profile
    overlaid it) with this entry's keys merged over it."""
    entry = config["models"][model]
    if "variant_of" not in entry:
        return entry
    return _merged(config["models"][entry["variant_of"]], {k: v for k, v in entry.items() if k != "variant_of"})


def base_model(model):
    """The model a variant derives from (itself when it is not a variant)."""
    return config["models"][model].get("variant_of", model)


def model_entry(dataset, model):
    """A model's definition on one dataset: its sections with dataset_overrides[dataset] merged in."""
    entry = model_definition(model)
    override = entry.get("dataset_overrides", {}).get(dataset, {})
    return _merged({k: v for k, v in entry.items() if k != "dataset_overrides"}, override)


def check_run_config():
    """Fail at parse time, naming the key, when the run names something params.yaml lacks."""
    import jsonschema
    import yaml

    for name in config["run"]["datasets"]:
        if "_" in name:
            raise ValueError(f"params.yaml: dataset name {name!r} has a '_'; report files join dataset and model "
                             "names with '_', so dataset names use letters, digits and '-' only")
        if name not in config["datasets"]:
            raise ValueError(f"params.yaml: run.datasets lists {name!r} but datasets.{name} is missing")
    for name in config["run"].get("models_per_dataset", {}):  # a dataset outside this run is allowed (profiles)
        if name not in config["datasets"]:
            raise ValueError(f"params.yaml: run.models_per_dataset has {name!r}, which datasets does not define")
    schema = yaml.safe_load(open(workflow.source_path("../schemas/params.schema.yaml")))
    model_schema = {"$defs": schema["$defs"], **schema["$defs"]["model"]}
    for name, entry in config["models"].items():
        base = entry.get("variant_of")
        if base is not None and base not in config["models"]:
            raise ValueError(f"params.yaml: models.{name}.variant_of is {base!r}, which models does not define")
        if base is not None and "variant_of" in config["models"][base]:
            raise ValueError(f"params.yaml: models.{name}.variant_of is {base!r}, itself a variant; name a plain model")
    for dataset, model in run_pairs():
        if model not in config["models"]:
            raise ValueError(f"params.yaml: the run lists model {model!r} on {dataset} but models.{model} is missing")
        try:
            jsonschema.validate(model_entry(dataset, model), model_schema)
        except jsonschema.ValidationError as error:
            where = ".".join(map(str, error.absolute_path))
            raise ValueError(f"params.yaml: models.{model} with dataset_overrides.{dataset}: {where}: "
                             f"{error.message}") from None


check_run_config()


def as_json(obj):
    """Compact, key-sorted JSON for a shell argument (quoted with {params.x:q})."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def train_section(dataset, model):
    section = dict(model_entry(dataset, model)["train"])
    section.setdefault("seed", config.get("seed", 0))
    return section


def checkpoint_steps(dataset, model):
    """Zero-padded steps of the checkpoints a model keeps on a dataset (the last step included)."""
    section = train_section(dataset, model)
    steps = sorted(set(section["checkpoint_steps"]) | {section["steps"]})
    return [f"{s:07d}" for s in steps]


def final_step(dataset, model):
    return checkpoint_steps(dataset, model)[-1]


def model_config_json(dataset, model):
    entry = model_entry(dataset, model)
    return as_json({"head": entry["head"], **entry["architecture"]})


def class_conditional(dataset, model):
    return bool(model_entry(dataset, model).get("class_conditional", False))


def uses_gpu():
    """Whether jobs that run models may run on CUDA (device auto or cuda)."""
    return config.get("device", "auto") != "cpu"


def training_gpus(dataset, model):
    """GPUs one training job takes (the `gpu` resource); 0 on device cpu."""
    return model_entry(dataset, model).get("gpus", 1) if uses_gpu() else 0


def extractor_kind():
    return config["evaluation"].get("extractor", "classifier")


def extractor_name(dataset):
    """The feature extractor's name in metric labels and reference paths."""
    return "inception-v3" if extractor_kind() == "inception" else f"{dataset}-classifier"


def extractor_path(dataset):
    """The file the feature extractor is loaded from: an input of every evaluation rule."""
    if extractor_kind() == "inception":
        return INCEPTION_WEIGHTS
    return f"results/extractors/{dataset}/classifier.pt"


def reference_path(dataset):
    n = config["evaluation"]["n_reference"]
    return f"results/reference/{dataset}/{extractor_name(dataset)}_{n}.npz"


def metric_files(dataset):
    files = [f"results/metrics/{dataset}/real_test.json"]
    for model in models_for(dataset):
        files += expand("results/metrics/{dataset}/{model}/{step}.json", dataset=dataset, model=model,
                        step=checkpoint_steps(dataset, model))
    return files


def all_reports():
    targets = ["reports/tables/table1.csv", "reports/tables/table1.md", "reports/tables/table1.tex", "reports/metrics.json", "reports/provenance/table1.json"]
    for dataset in config["run"]["datasets"]:
        targets += [f"reports/figures/{dataset}_samples.png", f"reports/figures/{dataset}_training_curves.png",
                    f"reports/figures/{dataset}_loss.png", f"reports/figures/{dataset}_inpainting.png"]
        if extractor_kind() == "classifier":
            targets.append(f"results/extractors/{dataset}/classifier.json")
        targets += [f"reports/figures/{dataset}_{m}_density.png" for m in models_for(dataset)
                    if model_entry(dataset, m)["head"] == "quantile"]
        targets += [f"reports/figures/{dataset}_{m}_classes.png" for m in models_for(dataset)
                    if class_conditional(dataset, m)]
    targets += [f"data/raw/{group}.dvc" for group in config.get("track_raw", [])]
    targets += sweep_targets()
    targets += vae_targets()  # rules/vae.smk
    targets += agave_targets()  # rules/agave.smk
    targets += cqf_targets()  # rules/cqf.smk
    return targets
