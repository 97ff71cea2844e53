# Hyperparameter sweeps (params: sweep). Per (dataset, model) in sweep.datasets x sweep.models:
#   sweep_configs   results/sweeps/{dataset}/{model}/configs.tsv       N seeded draws from the space
#   sweep_trial     .../rung{rung}/{trial}.json                        one job per trial and rung
#   sweep_rung      .../rung{rung}.json (a checkpoint)                 ranking, the 1/eta promoted
#   sweep_select    .../selected.json                                  the chosen configuration
#   sweep_report    reports/sweeps/{dataset}_{model}.{csv,md}, reports/figures/{dataset}_{model}_sweep.png
# The model's training rule reads selected.json, so a changed sweep changes the final model.
# With sweep.eta = 1 there is one rung at the full budget: the exhaustive sweep of the paper.
# Every trial writes its own file; a trial that failed for a transient reason (e.g. out of
# memory) is rerun by the next invocation (its `attempt` param changes), a diverged one is not.
import os

from aiqn.methods.pixeliqn.sweep import rung_budgets, survivors, trial_name

SWEEP = config["sweep"]


wildcard_constraints:
    rung=r"\d+",
    trial=r"t\d\d\d+",


def sweep_on(dataset, model):
    """Whether the model's configuration on this dataset comes from a sweep."""
    return dataset in SWEEP["datasets"] and model in SWEEP["models"]


def sweep_choice(dataset, model):
    """The selected.json whose choice a model trains with: its own sweep's, else (a variant
    without a sweep of its own) its base model's; None without either."""
    for source in (model, base_model(model)):
        if sweep_on(dataset, source):
            return f"results/sweeps/{dataset}/{source}/selected.json"
    return None


def sweep_pairs():
    return [(dataset, model) for dataset, model in run_pairs() if sweep_on(dataset, model)]


def sweep_budgets():
    """Steps at the end of each rung (one rung: exhaustive)."""
    return rung_budgets(SWEEP["steps"], SWEEP["n_configs"], SWEEP["eta"], SWEEP["min_steps"])


def rung_trials(dataset, model, rung):
    """Trials a rung trains: all for rung 0, else those the previous rung promoted."""
    if rung == 0:
        return [trial_name(i) for i in range(SWEEP["n_configs"])]
    decision = checkpoints.sweep_rung.get(dataset=dataset, model=model, rung=str(rung - 1)).output[0]
    with open(decision) as handle:
        return json.load(handle)["promoted"]


def rung_results(dataset, model, rung):
    return [f"results/sweeps/{dataset}/{model}/rung{rung}/{t}.json" for t in rung_trials(dataset, model, rung)]


def all_rung_results(w):
    return [f for rung in range(len(sweep_budgets())) for f in rung_results(w.dataset, w.model, rung)]


def trial_attempt(w):
    """1 for a new trial; the recorded attempt for a finished or diverged one; one more for one
    that failed for a transient reason, so that Snakemake's params trigger reruns it."""
    path = f"results/sweeps/{w.dataset}/{w.model}/rung{w.rung}/{w.trial}.json"
    if not os.path.exists(path):
        return 1
    with open(path) as handle:
        record = json.load(handle)
    attempt = int(record.get("attempt", 1))
    return attempt + 1 if record.get("retry") else attempt


def sweep_targets():
    targets = []
    for dataset, model in sweep_pairs():
        targets += [f"results/sweeps/{dataset}/{model}/selected.json", f"reports/sweeps/{dataset}_{model}.csv",
                    f"reports/figures/{dataset}_{model}_sweep.png"]
    return targets


rule sweep_configs:
    output:
        "results/sweeps/{dataset}/{model}/configs.tsv",
    params:
        space=lambda w: as_json(SWEEP["spaces"][w.model]),
        n=SWEEP.get("n_configs", 0),
        seed=SWEEP["seed"],
    log:
        "logs/sweep/{dataset}/{model}/configs.log",
    shell:
        "{PYTHON} sweep-configs --model {wildcards.model} --space {params.space:q} --n {params.n}"
        " --seed {params.seed} --out {output} > {log} 2>&1"


rule sweep_trial:
    input:
        configs="results/sweeps/{dataset}/{model}/configs.tsv",
        train="data/processed/{dataset}/train.npz",
        extractor=lambda w: extractor_path(w.dataset),
        reference=lambda w: validation_reference_path(w.dataset),  # trials are ranked on the validation split
    output:
        "results/sweeps/{dataset}/{model}/rung{rung}/{trial}.json",
    params:
        model_config=lambda w: model_config_json(w.dataset, w.model),
        base_train=lambda w: as_json(train_section(w.dataset, w.model)),
        steps=SWEEP.get("steps", 0),
        budgets=",".join(map(str, sweep_budgets())) if SWEEP else "",
        attempt=trial_attempt,
        n_samples=SWEEP.get("n_samples", 0),
        metric=SWEEP["metric"],
        sample_batch=config["sampling"]["batch_size"],
        sample_seed=config["sampling"]["seed"],
        splits=config["evaluation"]["is_splits"],
        name=lambda w: extractor_name(w.dataset),
        kind=extractor_kind(),
        device=config["device"],
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/sweep/{dataset}/{model}/rung{rung}/{trial}.log",
    shell:
        "{PYTHON} --threads {threads} sweep-trial --dataset {wildcards.dataset} --model {wildcards.model}"
        " --trial {wildcards.trial} --rung {wildcards.rung} --attempt {params.attempt} --configs {input.configs}"
        " --data {input.train} --model-config {params.model_config:q} --base-train {params.base_train:q}"
        " --steps {params.steps} --budgets {params.budgets} --n-samples {params.n_samples}"
        " --sample-batch {params.sample_batch} --sample-seed {params.sample_seed} --metric {params.metric:q}"
        " --splits {params.splits} --extractor {input.extractor} --extractor-name {params.name}"
        " --extractor-kind {params.kind} --reference {input.reference} --device {params.device}"
        " --state-dir state/sweeps/{wildcards.dataset}/{wildcards.model}/{wildcards.trial} --out {output}"
        " > {log} 2>&1"


checkpoint sweep_rung:
    input:
        lambda w: rung_results(w.dataset, w.model, int(w.rung)),
    output:
        "results/sweeps/{dataset}/{model}/rung{rung}.json",
    params:
        keep=lambda w: survivors(SWEEP["n_configs"], SWEEP["eta"], int(w.rung) + 1),
        budget=lambda w: sweep_budgets()[int(w.rung)],
        metric=SWEEP["metric"],
    log:
        "logs/sweep/{dataset}/{model}/rung{rung}.log",
    shell:
        "{PYTHON} sweep-rung --results {input} --metric {params.metric:q} --keep {params.keep}"
        " --rung {wildcards.rung} --budget {params.budget} --out {output} > {log} 2>&1"


rule sweep_select:
    input:
        decisions=lambda w: [f"results/sweeps/{w.dataset}/{w.model}/rung{r}.json" for r in range(len(sweep_budgets()))],
        results=all_rung_results,
    output:
        "results/sweeps/{dataset}/{model}/selected.json",
    params:
        metric=SWEEP["metric"],
        eta=SWEEP["eta"],
    log:
        "logs/sweep/{dataset}/{model}/select.log",
    shell:
        "{PYTHON} sweep-select --decisions {input.decisions} --results {input.results} --metric {params.metric:q}"
        " --eta {params.eta} --out {output} > {log} 2>&1"


rule sweep_report:
    input:
        selected="results/sweeps/{dataset}/{model}/selected.json",
        results=all_rung_results,
    output:
        csv=report("reports/sweeps/{dataset}_{model}.csv", caption="../report/sweep.rst", category="Sweeps"),
        md="reports/sweeps/{dataset}_{model}.md",
        figure=report("reports/figures/{dataset}_{model}_sweep.png", caption="../report/sweep.rst",
                      category="Sweeps"),
    log:
        "logs/sweep/{dataset}/{model}/report.log",
    shell:
        "{PYTHON} --threads {threads} sweep-report --dataset {wildcards.dataset} --model {wildcards.model}"
        " --selected {input.selected} --results {input.results} --csv {output.csv} --md {output.md}"
        " --figure {output.figure} > {log} 2>&1"
