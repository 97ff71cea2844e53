# Sampling and scoring: N images from the EMA weights of every kept checkpoint of a (dataset,
# model), with the cached sampler by default, and each checkpoint's FID / IS (and bits/dim) on
# them. One job per (dataset, model) runs every `sample` and `evaluate` call of that model in one
# process (`aiqn chain`): a job per call paid the interpreter and torch start-up (~3 s) 32 times
# on the default run instead of 4 (docs/benchmarks.md). Batches are written as shards under
# state/samples/... (not a rule output), so an interrupted job redraws only the missing shards
# when it is run again.


include: "helpers/score.smk"


# One rule per (dataset, model), like training (rules/train.smk): its outputs are that model's
# checkpoint steps, which a wildcard rule could not list; a job per seed.
for _dataset, _model in run_pairs():

    rule:
        name:
            score_rule_name(_dataset, _model)
        input:
            **scoring_inputs(_dataset),
            checkpoints=[
                f"{run_dir(_dataset, _model, '{seed}')}/ckpt_{s}.pt" for s in checkpoint_steps(_dataset, _model)
            ],
        output:
            samples=[samples_path(_dataset, _model, "{seed}", s) for s in checkpoint_steps(_dataset, _model)],
            samples_meta=[
                f"{samples_path(_dataset, _model, '{seed}', s)}.json" for s in checkpoint_steps(_dataset, _model)
            ],
            metrics=[metrics_path(_dataset, _model, "{seed}", s) for s in checkpoint_steps(_dataset, _model)],
        log:
            f"logs/score/{_dataset}/{_model}/seed-{{seed}}.log",
        benchmark:
            f"logs/benchmarks/{score_rule_name(_dataset, _model)}/{{seed}}.tsv"
        conda:
            "../envs/aiqn.yaml"
        threads: 1
        resources:
            gpu=1 if uses_gpu() else 0,
        params:
            calls=lambda w, dataset=_dataset, model=_model: score_calls(dataset, model, w.seed),
        shell:
            CHAIN_SHELL
