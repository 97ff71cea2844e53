# Helpers of rules/sweep.smk (its input functions, names and constants): Snakemake's lint wants
# functions apart from rules.
import os


from aiqn.methods.pixeliqn.sweep import rung_budgets, survivors, trial_name

SWEEP = config["sweep"]


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


def sweep_base_train(dataset, model):
    """The train section a trial starts from: the model's, eager (a trial of 40-400 steps never
    repays torch.compile's 30-50 s; profiles/long compiles its final trainings only)."""
    return {**train_section(dataset, model), "compile": False}


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


def model_rung_results(dataset, model):
    """Every trial result of one model's sweep, rung by rung."""
    return [f for rung in range(len(sweep_budgets())) for f in rung_results(dataset, model, rung)]


def all_rung_results(w):
    return model_rung_results(w.dataset, w.model)


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


def shared_sweep_models(dataset):
    """The models swept on a dataset, in sweep.models order (the side-by-side report needs two)."""
    return [model for d, model in sweep_pairs() if d == dataset]


def shared_sweep_results(w):
    return [f for model in shared_sweep_models(w.dataset) for f in model_rung_results(w.dataset, model)]


def sweep_targets():
    targets = []
    for dataset in dict.fromkeys(d for d, _ in sweep_pairs()):
        if len(shared_sweep_models(dataset)) >= 2:
            targets += [f"reports/sweeps/shared/{dataset}.csv", f"reports/sweeps/shared/{dataset}.md"]
    for dataset, model in sweep_pairs():
        targets += [
            f"results/sweeps/{dataset}/{model}/selected.json",
            f"reports/sweeps/{dataset}_{model}.csv",
            f"reports/figures/{dataset}_{model}_sweep.png",
        ]
    return targets
