# Helpers of rules/agave.smk (its input functions, names and constants): Snakemake's lint wants
# functions apart from rules.
import re
import shlex


from collections import namedtuple

check_method_datasets("agave")


METHOD_TARGETS.append(
    lambda: method_report_targets("agave", "agave_table1", figures=("agave_lambda", "agave_samples", "agave_ablation"))
)


AGAVE_LAMBDA = r"[0-9]+(\.[0-9]+)?"  # a lambda as lam_name writes it in file names


def lam_name(value):
    """A lambda as it appears in file names and labels: 2 -> '2', 0.5 -> '0.5'."""
    return f"{float(value):g}"


def agave_table_lambdas():
    return [lam_name(v) for v in config["agave"]["table_lambdas"]]


def agave_figure_lambdas():
    return [lam_name(v) for v in config["agave"]["figure_lambdas"]]


def agave_samples_lambda():
    return lam_name(config["agave"]["samples"]["lambda"])


def agave_ablation_lambda():
    return lam_name(config["agave"]["ablation"]["lambda"])


def agave_checkpoint(dataset, run, seed):
    """The published final checkpoint of a run (lambda{lam}, ablation or a matched baseline) of one seed."""
    steps = config["agave"]["ablation"]["steps"] if run == "ablation" else None  # None: agave.train.steps
    return method_checkpoint("agave", dataset, run, seed, steps)


def agave_run_file(dataset, run, seed, name):
    """A file a run publishes beside its checkpoint: train_log.csv, config.json or train.json."""
    return method_run_file("agave", dataset, run, seed, name)


# The matched baselines of the table: run name -> whether its PixelCNN is gated, its row name.
AgaveBaseline = namedtuple("AgaveBaseline", "gated label")


AGAVE_BASELINES = {  # in the table's row order, the paper's (Table 1: PixelCNN, then Gated PixelCNN)
    "plain": AgaveBaseline(False, "PixelCNN (matched baseline)"),
    "baseline": AgaveBaseline(True, "Gated PixelCNN (matched baseline)"),
}


def agave_baseline_model(baseline):
    """A matched baseline: the AGAVE decoder's sizes, categorical head, no conditioning; the Gated
    PixelCNN (`baseline`) or the original PixelCNN of van den Oord et al. 2016a (`plain`)."""
    arch = config["agave"]["architecture"]
    keys = ("blocks", "filter_size", "planes", "output_planes")
    model = {"head": "categorical", **{key: arch[key] for key in keys}}
    if not AGAVE_BASELINES[baseline].gated:
        model["gated"] = False
    return model


def agave_baseline_train(seed):
    """aiqn.methods.pixeliqn.train.TrainConfig of the baseline: AGAVE's steps, batch and EMA, the run seed, the
    baseline's optimizer."""
    train = method_train_section("agave", seed)
    section = {key: train[key] for key in ("steps", "batch_size", "ema_rate", "seed")}
    section.update(config["agave"]["baseline"])
    section["checkpoint_steps"] = [train["steps"]]
    return section


def agave_eval_k(name):
    """K of the importance-sampled bound: agave.evaluation.importance_k for the table's lambdas, else 0."""
    if name.startswith("lambda") and name[len("lambda") :] in agave_table_lambdas():
        return config["agave"]["evaluation"]["importance_k"]
    return 0


def agave_model_label(name):
    """The row name of a metrics file in the table and figures (paper/claims.yaml's agave-ablation-kl pairs the
    ablation's row with its lambda's by these names)."""
    if name in AGAVE_BASELINES:
        return AGAVE_BASELINES[name].label
    if name == "ablation":
        return f"AGAVE (lambda={agave_ablation_lambda()}), no auxiliary loss"
    return f"AGAVE (lambda={name[len('lambda'):]})"


def agave_table_rows():
    """The metrics files' names of the table, every one on every seed: the baselines, the table's lambdas,
    the ablation and the lambda it continued (Figure 7's two ends, compared by the claims)."""
    lambdas = agave_table_lambdas() + [lam for lam in [agave_ablation_lambda()] if lam not in agave_table_lambdas()]
    return [*AGAVE_BASELINES] + [f"lambda{lam}" for lam in lambdas] + ["ablation"]


def agave_figure_only_lambdas():
    """Figure 4's lambdas that are no table row (evaluated by evaluate_agave_figure_lambda, first seed only)."""
    rows = agave_table_rows()
    return [lam for lam in agave_figure_lambdas() if f"lambda{lam}" not in rows]


def agave_evaluate_call(dataset, name, seed):
    """The `evaluate-agave` call of one run (a table row's name: lambda<l>, ablation or a baseline) of one seed."""
    evaluation = config["agave"]["evaluation"]
    return (
        f"evaluate-agave --dataset {dataset} --model {shlex.quote(agave_model_label(name))}"
        f" --checkpoint {agave_checkpoint(dataset, name, seed)} --test data/processed/{dataset}/test.npz"
        f" --dataset-meta data/processed/{dataset}/meta.json --k {agave_eval_k(name)}"
        f" --elbo-samples {evaluation['elbo_samples']} --seed {evaluation['seed']}"
        f" --batch-size {evaluation['batch_size']} --k-batch {evaluation['k_batch']} --device {config['device']}"
        f" --rule evaluate_agave --wildcards dataset={dataset},name={name},seed={seed}"
        f" --out {method_metrics('agave', dataset, name, seed)}"
    )
