# Sampling: N images from the EMA weights of every kept checkpoint.


rule sample:
    input:
        checkpoint="results/runs/{dataset}/{model}/ckpt_{step}.pt",
    output:
        samples="results/samples/{dataset}/{model}/{step}.npz",
        meta="results/samples/{dataset}/{model}/{step}.npz.json",
    params:
        n=config["sampling"]["n_samples"],
        batch_size=config["sampling"].get("batch_size", 500),
        seed=config["sampling"].get("seed", 1),
        device=config.get("device", "auto"),
    threads: 1
    log:
        "logs/sample/{dataset}/{model}/{step}.log",
    shell:
        "{PYTHON} --threads {threads} sample --checkpoint {input.checkpoint} --n {params.n}"
        " --batch-size {params.batch_size} --seed {params.seed} --device {params.device}"
        " --out {output.samples} --no-progress > {log} 2>&1"
