# Helpers of rules/score.smk (its input functions, names and constants): Snakemake's lint wants
# functions apart from rules.
def score_calls(dataset, model, seed):
    """The chained `sample` and `evaluate` calls of every checkpoint of (dataset, model) trained with `seed`."""
    sampling = config["sampling"]
    calls = []
    for step in checkpoint_steps(dataset, model):
        ckpt = f"{run_dir(dataset, model, seed)}/ckpt_{step}.pt"
        samples = samples_path(dataset, model, seed, step)
        calls.append(
            f"sample --checkpoint {ckpt} --n {sampling['n_samples']} --batch-size {sampling['batch_size']}"
            f" --seed {sampling['seed']} --method {sampling['method']}"
            f" --shard-dir state/samples/{dataset}/{model}/seed-{seed}/{step} --device {config['device']} --out {samples}"
            " --no-progress"
        )
        calls.append(
            evaluate_call(
                dataset,
                model,
                samples,
                ckpt,
                score_rule_name(dataset, model),
                f"dataset={dataset},model={model},seed={seed},step={step}",
                metrics_path(dataset, model, seed, step),
                final=step == final_step(dataset, model),
            )
        )
    return " :: ".join(calls)


def score_rule_name(dataset, model):
    return f"score_{dataset}_{model}".replace("-", "_")
