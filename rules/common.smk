# Shared input functions and config slices. A rule reads only the params it needs, so that
# changing a sampling parameter re-samples without retraining.
import json


wildcard_constraints:
    dataset=r"[A-Za-z0-9-]+",  # no "_": file names join dataset and model with "_"
    model=r"[A-Za-z0-9_-]+",
    step=r"\d{7}",
    seed=r"\d+",


INCEPTION_WEIGHTS = "data/raw/inception/weights-inception-2015-12-05-6726825d.pth"  # aiqn.metrics.inception


def models_for(dataset):
    """The models run on a dataset: run.models_per_dataset[dataset], else run.models."""
    return config["run"]["models_per_dataset"].get(dataset, config["run"]["models"])


def run_pairs():
    """(dataset, model) of every model trained in this run, in config order."""
    return [(dataset, model) for dataset in config["run"]["datasets"] for model in models_for(dataset)]


def _merged(base, override):
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
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
    override = entry["dataset_overrides"].get(dataset, {})
    return _merged({k: v for k, v in entry.items() if k != "dataset_overrides"}, override)


def check_run_config():
    """Fail at parse time, naming the key, when the run names something params.yaml lacks."""
    import jsonschema
    import yaml

    for name in config["run"]["datasets"]:
        if "_" in name:
            raise ValueError(
                f"params.yaml: dataset name {name!r} has a '_'; report files join dataset and model "
                "names with '_', so dataset names use letters, digits and '-' only"
            )
        if name not in config["datasets"]:
            raise ValueError(f"params.yaml: run.datasets lists {name!r} but datasets.{name} is missing")
    from aiqn.data import get_dataset, registered_names

    used = set(config["run"]["datasets"])
    for section in ("vae", "agave", "cqf", "sweep"):
        used |= set(config.get(section, {}).get("datasets", []))
    for name in sorted(used & set(config["datasets"])):  # a list naming no datasets entry: check_method_datasets
        if name not in registered_names():
            raise ValueError(
                f"params.yaml: dataset {name!r} is not registered (registered: "
                f"{', '.join(registered_names())}); register it in src/aiqn/data/ "
                "(docs/adding-a-dataset.md) or fix the name"
            )
        takes = get_dataset(name).options
        for key in sorted(set(config["datasets"][name] or {}) - set(takes)):
            raise ValueError(
                f"params.yaml: datasets.{name}.{key} is not an option of {name} (it takes: "
                f"{', '.join(takes) or 'none'}; DatasetSpec.options in src/aiqn/data/)"
            )
    for name in config["run"]["models_per_dataset"]:  # a dataset outside this run is allowed (profiles)
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
            raise ValueError(
                f"params.yaml: models.{model} with dataset_overrides.{dataset}: {where}: " f"{error.message}"
            ) from None


check_run_config()


def as_json(obj):
    """Compact, key-sorted JSON for a shell argument (quoted with {params.x:q})."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _with_run_seed(train):
    """A copy of a train section, with the top-level seed where it sets none."""
    section = dict(train)
    section.setdefault("seed", config["seed"])
    return section


def run_seeds():
    """The training seeds (run.seeds): every model of Table 1 and of the methods (AIQN-VAE, AGAVE, CQF) trains,
    samples and is scored once per seed."""
    return config["run"]["seeds"]


def figure_seed():
    """The seed whose samples, checkpoints and logs the figures show (the first of run.seeds); the
    tables and the training curves show every seed."""
    return run_seeds()[0]


def run_dir(dataset, model, seed):
    """Where train publishes one seed's checkpoints, train_log.csv and config.json (rules/train.smk)."""
    return f"results/runs/{dataset}/{model}/seed-{seed}"


def train_rule_name(dataset, model):
    """The name of the rule that trains a model on a dataset; rules/train.smk defines one per pair."""
    return f"train_{dataset}_{model}".replace("-", "_")


def samples_path(dataset, model, seed, step):
    return f"results/samples/{dataset}/{model}/seed-{seed}/{step}.npz"


def metrics_path(dataset, model, seed, step):
    return f"results/metrics/{dataset}/{model}/seed-{seed}/{step}.json"


def train_section(dataset, model, seed=None):
    """A model's train section on a dataset; `seed`: the run seed it trains with (run.seeds), else the
    section's own seed or the top-level one (the sweep's trials)."""
    section = _with_run_seed(model_entry(dataset, model)["train"])
    if seed is not None:
        section["seed"] = int(seed)
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
    return bool(model_entry(dataset, model)["class_conditional"])


def uses_gpu():
    """Whether jobs that run models may run on CUDA (device auto or cuda)."""
    return config["device"] != "cpu"


def training_gpus(dataset, model):
    """GPUs one training job takes (the `gpu` resource); 0 on device cpu."""
    return model_entry(dataset, model)["gpus"] if uses_gpu() else 0


def extractor_kind():
    return config["evaluation"]["extractor"]


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


def validation_reference_path(dataset):
    """validation_stats' output (rules/evaluate.smk): the feature statistics of every validation image,
    which the sweep ranks by and every checkpoint's 'FID vs val' is scored against."""
    return f"results/reference/{dataset}/{extractor_name(dataset)}_val.npz"


def features_path(dataset):
    """reference_features' output (rules/evaluate.smk): every train and test image's features and the
    held-out side of the memorisation check; an input of every scoring rule."""
    return f"results/reference/{dataset}/{extractor_name(dataset)}_features.npz"


def comparison_args(dataset):
    """The N-vs-N and memorisation arguments of the evaluate and evaluate-real verbs (evaluation section)."""
    evaluation = config["evaluation"]
    return (
        f"--features {features_path(dataset)} --train data/processed/{dataset}/train.npz"
        f" --n-compare {evaluation['n_compare']} --compare-seed {evaluation['reference_seed']}"
        f" --kid-subsets {evaluation['kid_subsets']} --kid-subset-size {evaluation['kid_subset_size']}"
        f" --memorisation-percentile {evaluation['memorisation_percentile']} --bootstrap {evaluation['bootstrap']}"
    )


def scoring_inputs(dataset):
    """The files every evaluate_call reads besides its checkpoint and samples: the input of each scoring rule
    (`**scoring_inputs(d)`, or `unpack(lambda w: scoring_inputs(w.dataset))` in a wildcard rule)."""
    return {
        "extractor": extractor_path(dataset),
        "reference": reference_path(dataset),
        "validation": validation_reference_path(dataset),
        "features": features_path(dataset),
        "train": f"data/processed/{dataset}/train.npz",
        "test": f"data/processed/{dataset}/test.npz",
        "dataset_meta": f"data/processed/{dataset}/meta.json",
    }


def evaluate_call(dataset, model, samples, ckpt, rule, wildcards, out, final=True, extra=""):
    """The shared `evaluate` verb's arguments for one sample file, as every scoring rule chains them
    after its sampling call (rules/score.smk, rules/vae.smk, rules/cqf.smk; each lists
    scoring_inputs()). Each argument is a value or a Snakemake placeholder ("{wildcards.dataset}");
    the extractor, references, splits and batch size follow the evaluation section; `extra`: the
    method's own options (CQF's bound)."""
    evaluation = config["evaluation"]
    extra_args = f" {extra}" if extra else ""
    return (
        f"evaluate --dataset {dataset} --model {model} --samples {samples} --checkpoint {ckpt}"
        f" --extractor {extractor_path(dataset)} --extractor-name {extractor_name(dataset)}"
        f" --extractor-kind {extractor_kind()} --batch-size {evaluation['batch_size']}"
        f" --device {config['device']} --reference {reference_path(dataset)}"
        f" --validation-reference {validation_reference_path(dataset)}"
        f" --test data/processed/{dataset}/test.npz --dataset-meta data/processed/{dataset}/meta.json"
        f" --splits {evaluation['is_splits']} {comparison_args(dataset)}{' --final' if final else ''}"
        f" --rule {rule}{extra_args} --wildcards {wildcards} --out {out}"
    )


def real_data_metrics(dataset):
    """evaluate_real's score of the test split (rules/evaluate.smk): the floor row of every table,
    Table 1's and the other methods' (rules/vae.smk, rules/cqf.smk)."""
    return f"results/metrics/{dataset}/real_test.json"


def metric_files(dataset):
    """The floor's and every model's metrics files on a dataset: every seed, every checkpoint."""
    files = [real_data_metrics(dataset)]
    for model in models_for(dataset):
        files += [
            metrics_path(dataset, model, seed, step)
            for seed in run_seeds()
            for step in checkpoint_steps(dataset, model)
        ]
    return files


def all_reports():
    targets = [
        "reports/tables/claims.csv",
        "reports/tables/claims.md",
        "reports/provenance/claims.json",
        "reports/tables/table1.csv",
        "reports/tables/table1.md",
        "reports/tables/table1.tex",
        "reports/metrics.json",
        "reports/plots",
        "reports/provenance/table1.json",
    ]
    for dataset in config["run"]["datasets"]:
        targets += [
            f"reports/figures/{dataset}_samples.png",
            f"reports/figures/{dataset}_training_curves.png",
            f"reports/figures/{dataset}_loss.png",
            f"reports/figures/{dataset}_inpainting.png",
            f"reports/figures/{dataset}_memorisation.png",
            f"reports/figures/{dataset}_budget.png",
            f"reports/tables/{dataset}_budget.csv",
        ]
        if extractor_kind() == "classifier":
            targets.append(f"results/extractors/{dataset}/classifier.json")
        targets += [
            f"reports/figures/{dataset}_{m}_density.png"
            for m in models_for(dataset)
            if model_entry(dataset, m)["head"] == "quantile"
        ]
        targets += [
            f"reports/figures/{dataset}_{m}_classes.png" for m in models_for(dataset) if class_conditional(dataset, m)
        ]
    targets += [f"data/raw/{group}.dvc" for group in config["track_raw"]]
    targets += sweep_targets()
    for method_targets in METHOD_TARGETS:
        targets += method_targets()
    return targets


# The methods of other papers: rules/vae.smk, rules/agave.smk, rules/cqf.smk (docs/adding-a-method.md).
# Each reads one top-level params section (vae, agave, cqf; the schema fills in its defaults) and
# keeps its files under results/<section>/, state/<section>/ and logs/<section>/. What they take
# from the AIQN rules, besides prepare_data's splits and the feature extractor:
#   vae, cqf  real_data_metrics(): evaluate_real's score of the test split, their tables' floor row;
#             they score samples with the shared `evaluate` verb, as the score_<dataset>_<model> rules do
#   agave     pixelcnn_train_shell(): its matched baselines are trained by the PixelCNN method's
#             `train` verb (the one rules/train.smk runs)

METHOD_TARGETS = []  # a method's rules file appends a function returning its files for `rule all`


def method_datasets(section_name):
    """The datasets a method runs on: <section>.datasets ([] = the method is off)."""
    return config[section_name]["datasets"]


def check_method_datasets(section_name):
    """Fail at parse time, naming the key, when <section>.datasets names something params.yaml lacks."""
    for name in method_datasets(section_name):
        if "_" in name:
            raise ValueError(
                f"params.yaml: {section_name}.datasets has {name!r}, a name with '_'; dataset names use "
                "letters, digits and '-' only"
            )
        if name not in config["datasets"]:
            raise ValueError(f"params.yaml: {section_name}.datasets lists {name!r} but datasets.{name} is missing")


def method_train_section(section_name, seed=None):
    """<section>.train, with the top-level seed where it sets none (as train_section for models); `seed`:
    the run seed it trains with (run.seeds)."""
    section = _with_run_seed(config[section_name]["train"])
    if seed is not None:
        section["seed"] = int(seed)
    return section


def method_run_dir(section_name, dataset, run, seed):
    """Where a method's run of one training seed publishes its checkpoint, train_log.csv, config.json and
    train.json: results/<section>/<dataset>/<run>/seed-<seed> (its resumable state: the same under state/)."""
    return f"results/{section_name}/{dataset}/{run}/seed-{seed}"


def method_run_file(section_name, dataset, run, seed, name):
    """A file a method's run publishes beside its checkpoint: train_log.csv, config.json or train.json."""
    return f"{method_run_dir(section_name, dataset, run, seed)}/{name}"


def method_checkpoint(section_name, dataset, run, seed, steps=None):
    """The final checkpoint a method's run publishes, <method_run_dir>/ckpt_<steps>.pt (steps:
    <section>.train.steps unless given; the file name carries the step, as train's do)."""
    if steps is None:
        steps = config[section_name]["train"]["steps"]
    return f"{method_run_dir(section_name, dataset, run, seed)}/ckpt_{steps:07d}.pt"


def method_samples(section_name, dataset, name, seed):
    """A method's row's samples from the checkpoint of one training seed."""
    return f"results/{section_name}/{dataset}/samples/{name}/seed-{seed}.npz"


def method_metrics(section_name, dataset, name, seed):
    """A method's row's metrics file for one training seed."""
    return f"results/{section_name}/{dataset}/metrics/{name}/seed-{seed}.json"


def method_metric_files(section_name, names):
    """Every metrics file of a method's table: each of `names` on each dataset of <section>.datasets and each
    seed of run.seeds (the table shows their mean and interval over seeds)."""
    return [
        method_metrics(section_name, dataset, name, seed)
        for dataset in method_datasets(section_name)
        for name in names
        for seed in run_seeds()
    ]


def method_report_targets(section_name, table, figures):
    """A method's report files for the default target (all): reports/tables/<table>.{csv,md,tex}, its provenance
    record and reports/figures/<dataset>_<figure>.png per dataset; none when <section>.datasets is empty."""
    datasets = method_datasets(section_name)
    if not datasets:
        return []
    targets = [f"reports/tables/{table}.{ext}" for ext in ("csv", "md", "tex")] + [f"reports/provenance/{table}.json"]
    for dataset in datasets:
        targets += [f"reports/figures/{dataset}_{figure}.png" for figure in figures]
    return targets


# The shell of a rule whose params.calls holds the verb calls (each a verb with its arguments, joined
# by " :: ") that one job runs in one process (`aiqn chain`), its output in the rule's log.
CHAIN_SHELL = "python -m aiqn --threads {threads} chain {params.calls} > {log} 2>&1"


def method_table_shell(table):
    """The shared `table` verb as a method's table rule runs it (params title, caption, paper_heading;
    input metrics, paper; output provenance)."""
    return (
        f"python -m aiqn --threads {{threads}} table --name {table}"
        " --title {params.title:q} --caption {params.caption:q}"
        " --paper-heading {params.paper_heading:q} --metrics {input.metrics} --paper {input.paper}"
        " --out-dir reports/tables --provenance {output.provenance} > {log} 2>&1"
    )


def pixelcnn_train_shell(run_dir):
    """The PixelCNN method's `train` verb (aiqn.methods.pixeliqn; rules/train.smk) run by another method's
    rule: params model_config (a PixelCNNConfig, JSON), train_config (a pixeliqn TrainConfig, JSON) and
    device; state in state/<run_dir>, the checkpoints in results/<run_dir>."""
    return (
        "python -m aiqn --threads {threads} train --dataset {wildcards.dataset} --data {input.train}"
        " --model-config {params.model_config:q} --train-config {params.train_config:q}"
        f" --state-dir state/{run_dir} --out-dir results/{run_dir}"
        " --device {params.device} --no-progress > {log} 2>&1"
    )
