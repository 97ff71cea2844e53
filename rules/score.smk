# Sampling and scoring: N images from the EMA weights of every kept checkpoint of a (dataset,
# model), with the cached sampler by default, and each checkpoint's FID / IS (and bits/dim) on
# them. One job per (dataset, model) runs every `sample` and `evaluate` call of that model in one
# process (`aiqn chain`): a job per call paid the interpreter and torch start-up (~3 s) 32 times
# on the default run instead of 4 (docs/benchmarks.md). Batches are written as shards under
# state/samples/... (not a rule output), so an interrupted job redraws only the missing shards
# when it is run again.


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
            " --no-progress")
        calls.append(evaluate_call(dataset, model, samples, ckpt, score_rule_name(dataset, model),
                                   f"dataset={dataset},model={model},seed={seed},step={step}",
                                   metrics_path(dataset, model, seed, step),
                                   final=step == final_step(dataset, model)))
    return " :: ".join(calls)


def score_rule_name(dataset, model):
    return f"score_{dataset}_{model}".replace("-", "_")


# One rule per (dataset, model), like training (rules/train.smk): its outputs are that model's
# checkpoint steps, which a wildcard rule could not list; a job per seed.
for _dataset, _model in run_pairs():

    rule:
        name:
            score_rule_name(_dataset, _model)
        input:
            checkpoints=[f"{run_dir(_dataset, _model, '{seed}')}/ckpt_{s}.pt" for s in checkpoint_steps(_dataset, _model)],
            **scoring_inputs(_dataset),
        output:
            samples=[samples_path(_dataset, _model, "{seed}", s) for s in checkpoint_steps(_dataset, _model)],
            samples_meta=[samples_path(_dataset, _model, "{seed}", s) + ".json" for s in checkpoint_steps(_dataset, _model)],
            metrics=[metrics_path(_dataset, _model, "{seed}", s) for s in checkpoint_steps(_dataset, _model)],
        params:
            calls=lambda w, dataset=_dataset, model=_model: score_calls(dataset, model, w.seed),
        threads: 1
        resources:
            gpu=1 if uses_gpu() else 0,
        log:
            f"logs/score/{_dataset}/{_model}/seed-{{seed}}.log",
        shell:
            "{PYTHON} --threads {threads} chain {params.calls} > {log} 2>&1"
