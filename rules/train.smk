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
    params:
        cfg=lambda w: as_json(config["classifier"]),
    threads: 1
    log:
        "logs/train_classifier/{dataset}.log",
    shell:
        "{PYTHON} --threads {threads} train-classifier --dataset {wildcards.dataset} --train {input.train}"
        " --test {input.test} --config {params.cfg:q} --out {output.model} --report {output.report} > {log} 2>&1"


# One training rule per model, because each model keeps its own set of checkpoint steps
# (a rule's outputs cannot depend on a wildcard's value otherwise).
for _model in config["models"]:

    rule:
        name:
            f"train_{_model}"
        input:
            train=rules.prepare_data.output.train,
        output:
            checkpoints=[f"results/runs/{{dataset}}/{_model}/ckpt_{step}.pt" for step in checkpoint_steps(_model)],
            log_csv=f"results/runs/{{dataset}}/{_model}/train_log.csv",
            config=f"results/runs/{{dataset}}/{_model}/config.json",
        params:
            model=_model,
            model_config=model_config_json(_model),
            train_config=as_json(train_section(_model)),
            device=config.get("device", "auto"),
        threads: 1
        log:
            f"logs/train/{{dataset}}/{_model}.log",
        shell:
            "{PYTHON} --threads {threads} train --dataset {wildcards.dataset} --data {input.train}"
            " --model-config {params.model_config:q} --train-config {params.train_config:q}"
            " --state-dir state/train/{wildcards.dataset}/{params.model}"
            " --out-dir results/runs/{wildcards.dataset}/{params.model} --device {params.device}"
            " --no-progress > {log} 2>&1"
