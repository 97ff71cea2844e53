# Sampling: N images from the EMA weights of every kept checkpoint, with the cached sampler by
# default. Batches are written as shards under state/samples/... (not a rule output), so an
# interrupted job redraws only the missing shards when it is run again.


rule sample:
    input:
        checkpoint="results/runs/{dataset}/{model}/ckpt_{step}.pt",
    output:
        samples="results/samples/{dataset}/{model}/{step}.npz",
        meta="results/samples/{dataset}/{model}/{step}.npz.json",
    params:
        n=config["sampling"]["n_samples"],
        batch_size=config["sampling"]["batch_size"],
        seed=config["sampling"]["seed"],
        method=config["sampling"]["method"],
        device=config["device"],
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/sample/{dataset}/{model}/{step}.log",
    shell:
        "{PYTHON} --threads {threads} sample --checkpoint {input.checkpoint} --n {params.n}"
        " --batch-size {params.batch_size} --seed {params.seed} --method {params.method}"
        " --shard-dir state/samples/{wildcards.dataset}/{wildcards.model}/{wildcards.step}"
        " --device {params.device} --out {output.samples} --no-progress > {log} 2>&1"
