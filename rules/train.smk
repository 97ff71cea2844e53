# Training: the domain classifier (feature extractor) and the generative models.
# A model's resumable state lives in state/train/..., which is never a rule output: Snakemake
# deletes the outputs of an interrupted job, so resuming must not depend on them. Finished
# checkpoints are hard-linked into results/runs/... when training ends.


rule train_classifier:
    input:
        train=rules.prepare_data.output.train,
        test=rules.prepare_data.output.test,
    output:
        model="results/extractors/{dataset}/classifier.pt",
        report="results/extractors/{dataset}/classifier.json",
    log:
        "logs/train_classifier/{dataset}.log",
    benchmark:
        "logs/benchmarks/train_classifier/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    params:
        cfg=lambda w: as_json(config["classifier"]),
    shell:
        "python -m aiqn --threads {threads} train-classifier --dataset {wildcards.dataset} --train {input.train}"
        " --test {input.test} --config {params.cfg:q} --out {output.model} --report {output.report} > {log} 2>&1"


# One training rule per (dataset, model) of the run, because each keeps its own checkpoint steps
# (a rule's outputs cannot depend on a wildcard's value otherwise), and a model's definition may
# differ per dataset (dataset_overrides); a job per seed of run.seeds (the {seed} wildcard, a
# seed-<s> path segment; the seed is the train section's). With gpus > 1 on CUDA the job runs under
# torchrun (DistributedDataParallel, one process per GPU); it declares resources gpu=N, so
# `--resources gpu=K` on a workstation and a cluster profile schedule it right.
for _dataset, _model in run_pairs():

    rule:
        name:
            train_rule_name(_dataset, _model)
        input:
            train=f"data/processed/{_dataset}/train.npz",
            selected=[sweep_choice(_dataset, _model)] if sweep_choice(_dataset, _model) else [],
        output:
            checkpoints=[
                f"{run_dir(_dataset, _model, '{seed}')}/ckpt_{step}.pt" for step in checkpoint_steps(_dataset, _model)
            ],
            log_csv=f"{run_dir(_dataset, _model, '{seed}')}/train_log.csv",
            config=f"{run_dir(_dataset, _model, '{seed}')}/config.json",
        log:
            f"logs/train/{_dataset}/{_model}/seed-{{seed}}.log",
        benchmark:
            f"logs/benchmarks/{train_rule_name(_dataset, _model)}/{{seed}}.tsv"
        conda:
            "../envs/aiqn.yaml"
        threads: 1
        resources:
            gpu=training_gpus(_dataset, _model),
        params:
            dataset=_dataset,
            model=_model,
            model_config=model_config_json(_dataset, _model),
            train_config=lambda w, dataset=_dataset, model=_model: as_json(train_section(dataset, model, w.seed)),
            device=config["device"],
            selected=f"--selected {sweep_choice(_dataset, _model)}" if sweep_choice(_dataset, _model) else "",
            class_conditional="--class-conditional" if class_conditional(_dataset, _model) else "",
            launcher=(
                f"torchrun --standalone --nproc_per_node {training_gpus(_dataset, _model)} -m aiqn"
                if training_gpus(_dataset, _model) > 1
                else "python -m aiqn"
            ),
        shell:
            "{params.launcher} --threads {threads} train --dataset {params.dataset} --data {input.train}"
            " --model-config {params.model_config:q} --train-config {params.train_config:q}"
            " {params.selected} {params.class_conditional} --state-dir state/train/{params.dataset}/{params.model}/seed-{wildcards.seed}"
            " --out-dir results/runs/{params.dataset}/{params.model}/seed-{wildcards.seed} --device {params.device}"
            " --no-progress > {log} 2>&1"
