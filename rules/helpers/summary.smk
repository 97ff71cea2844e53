# Helpers of rules/summary.smk.
from aiqn.core.forkserver import JOB_LOG


def agave_runs():
    """Every AGAVE run trained: the table's rows (the baselines, its lambdas, the ablation) and the figure's
    lambdas."""
    runs = agave_table_rows() + [f"lambda{lam}" for lam in agave_figure_lambdas()]
    return list(dict.fromkeys(runs))


def training_logs():
    """ "<dataset>/<run>/seed-<s>" -> train_log.csv of every training run: Table 1's models on each dataset of the
    run, and each method's runs (vae-<variant>, agave-<run>, cqf-<variant>) on its datasets; every seed."""
    logs = {}
    for dataset in config["run"]["datasets"]:
        for model in models_for(dataset):
            for seed in run_seeds():
                logs[f"{dataset}/{model}/seed-{seed}"] = f"{run_dir(dataset, model, seed)}/train_log.csv"
    for section, runs in (("vae", VAE_VARIANTS), ("agave", agave_runs()), ("cqf", CQF_VARIANTS)):
        for dataset in method_datasets(section):
            for run in runs:
                for seed in run_seeds():
                    logs[f"{dataset}/{section}-{run}/seed-{seed}"] = method_run_file(
                        section, dataset, run, seed, "train_log.csv"
                    )
    return logs


RUNTIME_REPORT = ["reports/runtime/rules.csv", "reports/runtime/rules.md", "reports/runtime/rules.png"]
FORK_SERVER_JOB_LOG = JOB_LOG  # aiqn.core.forkserver: each forked job's exact CPU and memory, by its log file
