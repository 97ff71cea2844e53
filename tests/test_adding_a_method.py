"""docs/adding-a-method.md, followed step by step in a temporary copy of the repository.

A toy fifth method, `independent` (every pixel-channel its own learned softmax over the levels, no
dependence between pixels: the simplest likelihood model there is), is added the way the guide
says: a folder src/aiqn/methods/independent/ with its train step (a `Trainer` run by the one loop
`fit`) and its verbs (`add_verbs`; an `evaluate` likelihood entry for its checkpoint kind), a rules
file rules/independent.smk included by the Snakefile, an `independent` section in params.yaml and
the schema. Nothing outside those places is edited. The copy's pipeline then builds the method's
table; its FID / IS come from the shared `evaluate` verb, its bits/dim from the method's entry,
checked here against the closed form computed from the checkpoint's logits.
"""

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from repo_copy import REPO, copy_repo, run_python as run

# Step 1 of the guide: the method's folder.
INIT = '"""A toy method: independent per-pixel softmax (docs/adding-a-method.md)."""\n'

TRAIN = textwrap.dedent('''
    """The independent-pixel model: logits (C, L, H, W), one softmax per pixel-channel; trained by `fit`."""

    from __future__ import annotations

    from dataclasses import dataclass
    from pathlib import Path

    import numpy as np
    import torch

    from aiqn.core.config import TrainBase, make_optimizer
    from aiqn.core.loop import Run, Trainer, ema_copy, fit_trainer
    from aiqn.nets.objectives import categorical_nll
    from aiqn.nets.shape import ImageShape

    KIND = "independent"


    @dataclass
    class IndependentConfig(ImageShape):
        """Nothing but the image: the model is a table of logits."""


    @dataclass
    class IndependentTrainConfig(TrainBase):
        steps: int = 100
        lr: float = 0.05


    class PixelTable(torch.nn.Module):
        def __init__(self, config: IndependentConfig):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.zeros(config.channels, config.levels, config.height, config.width))

        def forward(self, n: int) -> torch.Tensor:
            return self.logits.expand(n, *self.logits.shape)  # (n, C, L, H, W)


    class IndependentTrainer(Trainer):
        desc = "train independent"

        def __init__(self, config, train_config, images, generator, device):
            self.model = PixelTable(config).to(device)
            self.ema = ema_copy(self.model, PixelTable(config).to(device))
            self.optimizer = make_optimizer(self.model.parameters(), "adam", train_config.lr)
            self.states = {"model": self.model, "ema": self.ema, "optimizer": self.optimizer}
            self.emas, self.optimizers = [(self.model, self.ema)], [self.optimizer]
            self.data, self.generator, self.batch_size = torch.from_numpy(images), generator, train_config.batch_size

        def step(self) -> torch.Tensor:
            index = torch.randint(len(self.data), (self.batch_size,), generator=self.generator)
            images = self.data[index].long()
            loss = categorical_nll(self.model(len(images)), images).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return loss.detach().view(1)


    def train_independent(config, train_config, images: np.ndarray, run_dir, **options):
        return fit_trainer(IndependentTrainer, Run(KIND, config, train_config, Path(run_dir)), images, **options)


    def sample(ckpt: dict, n: int, seed: int) -> np.ndarray:
        logits = ckpt["ema"]["logits"]  # (C, L, H, W)
        C, L, H, W = logits.shape
        probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, L)  # (C*H*W, L)
        draws = torch.multinomial(probs, n, replacement=True, generator=torch.Generator().manual_seed(seed))
        return draws.T.reshape(n, C, H, W).to(torch.uint8).numpy()
''').lstrip()

VERBS = textwrap.dedent('''
    """Verbs of the toy method: train-independent, sample-independent; bits/dim for `evaluate`."""

    from __future__ import annotations

    import json
    import math
    import time

    from aiqn.core.verbs import Declare, run_arguments, sample_arguments
    from aiqn.pipeline.verbs import likelihood_metrics


    def cmd_train(args) -> None:
        from aiqn.core.publish import publish_final
        from aiqn.data import get_dataset, load_split
        from aiqn.methods.independent.train import IndependentConfig, IndependentTrainConfig, train_independent

        spec = get_dataset(args.dataset)
        config = IndependentConfig(spec.channels, spec.height, spec.width, spec.levels)
        train_config = IndependentTrainConfig(**json.loads(args.train_config))
        images, _ = load_split(args.data)
        began = time.time()
        checkpoints = train_independent(config, train_config, images, args.state_dir, progress=False)
        publish_final(args, checkpoints[train_config.steps], train_config.steps, config, train_config, began, "cpu")


    def cmd_sample(args) -> None:
        from aiqn.core.checkpoint import load_checkpoint
        from aiqn.core.publish import write_samples
        from aiqn.methods.independent.train import sample

        ckpt = load_checkpoint(args.checkpoint)
        write_samples(args.out, sample(ckpt, args.n, args.seed), None, args.checkpoint, ckpt["step"], "cpu",
                      n=args.n, seed=args.seed, weights="ema", method="independent softmax per pixel-channel")


    @likelihood_metrics("independent")
    def bits_per_dim(ckpt: dict, args) -> list[dict]:
        import torch

        from aiqn.data import load_split
        from aiqn.nets.objectives import categorical_nll

        images, _ = load_split(args.test)
        x = torch.from_numpy(images).long()
        nll = categorical_nll(ckpt["ema"]["logits"].expand(len(x), -1, -1, -1, -1), x)
        return [{"metric": "bits/dim", "value": float(nll.double().mean()) / math.log(2),
                 "label": f"bits/dim ({args.dataset} test split, exact, EMA weights)"}]


    def add_verbs(verb: Declare) -> None:
        p = verb("train-independent", cmd_train, "train the independent-pixel toy model")
        run_arguments(p, train_config="JSON: IndependentTrainConfig fields")
        p = verb("sample-independent", cmd_sample, "samples of the independent-pixel toy model")
        sample_arguments(p)
''').lstrip()

# Step 2: the rules file.
RULES = textwrap.dedent('''
    # The toy method of docs/adding-a-method.md: train, sample, evaluate (shared verb), table (shared verb).
    def independent_checkpoint(dataset):
        return f"results/independent/{dataset}/ckpt_{config['independent']['train']['steps']:07d}.pt"


    def independent_targets():
        return ["reports/tables/independent.csv"] if method_datasets("independent") else []


    METHOD_TARGETS.append(independent_targets)


    rule train_independent:
        input:
            train="data/processed/{dataset}/train.npz",
        output:
            checkpoint=independent_checkpoint("{dataset}"),
            log_csv="results/independent/{dataset}/train_log.csv",
        params:
            train_config=lambda w: as_json(method_train_section("independent")),
        shell:
            "python -m aiqn train-independent --dataset {wildcards.dataset} --data {input.train}"
            " --train-config {params.train_config:q} --state-dir state/independent/{wildcards.dataset}"
            " --out-dir results/independent/{wildcards.dataset}"


    rule sample_independent:
        input:
            checkpoint=lambda w: independent_checkpoint(w.dataset),
        output:
            "results/independent/{dataset}/samples.npz",
        params:
            n=config["sampling"]["n_samples"],
        shell:
            "python -m aiqn sample-independent --checkpoint {input.checkpoint} --n {params.n} --out {output}"


    rule evaluate_independent:
        input:
            unpack(lambda w: scoring_inputs(w.dataset)),
            samples="results/independent/{dataset}/samples.npz",
            checkpoint=lambda w: independent_checkpoint(w.dataset),
        output:
            "results/independent/{dataset}/metrics/independent.json",
        shell:
            "python -m aiqn " + evaluate_call("{wildcards.dataset}", "independent", "{input.samples}", "{input.checkpoint}",
                                        "evaluate_independent", "dataset={wildcards.dataset}", "{output}")


    rule independent_table:
        input:
            metrics=lambda w: [f"results/independent/{d}/metrics/independent.json" for d in method_datasets("independent")]
            + [f"results/metrics/{d}/real_test.json" for d in method_datasets("independent")],
        output:
            "reports/tables/independent.csv",
            provenance="reports/provenance/independent.json",
        shell:
            "python -m aiqn table --name independent --title 'Independent pixels (toy)' --caption 'a toy method'"
            " --metrics {input.metrics} --paper paper/aiqn_vae.csv --out-dir reports/tables"
            " --provenance {output.provenance}"
''').lstrip()

# Step 3: the params section and its schema.
PARAMS = {"datasets": ["digits"], "train": {"steps": 60, "batch_size": 64, "lr": 0.05, "checkpoint_steps": []}}
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["datasets", "train"],
    "description": "the toy independent-pixel method (docs/adding-a-method.md)",
    "properties": {
        "datasets": {"type": "array", "items": {"type": "string"}, "description": "datasets it trains on"},
        "train": {"type": "object", "description": "IndependentTrainConfig fields",
                  "properties": {"steps": {"$ref": "#/$defs/positive_int"},
                                 "batch_size": {"$ref": "#/$defs/positive_int"},
                                 "lr": {"type": "number", "exclusiveMinimum": 0},
                                 "checkpoint_steps": {"type": "array", "items": {"$ref": "#/$defs/positive_int"}}},
                  "additionalProperties": False},
    },
}


def add_independent(repo: Path) -> None:
    """Steps 1-3 of docs/adding-a-method.md, applied to the copy."""
    folder = repo / "src/aiqn/methods/independent"
    folder.mkdir()
    (folder / "__init__.py").write_text(INIT)
    (folder / "train.py").write_text(TRAIN)
    (folder / "verbs.py").write_text(VERBS)
    (repo / "rules/independent.smk").write_text(RULES)
    snakefile = (repo / "Snakefile").read_text()
    anchor = 'include: "rules/cqf.smk"\n'
    assert anchor in snakefile
    (repo / "Snakefile").write_text(snakefile.replace(anchor, anchor + 'include: "rules/independent.smk"\n'))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["independent"] = PARAMS
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    schema = yaml.safe_load((repo / "schemas/params.schema.yaml").read_text())
    schema["properties"]["independent"] = SCHEMA
    (repo / "schemas/params.schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))


@pytest.mark.slow
def test_a_new_method_added_by_the_guide_runs_end_to_end(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_repo(repo)
    add_independent(repo)

    # the CLI found the method's verbs without an edit outside its folder
    verbs = run(repo, "-m", "aiqn", "--help", timeout=120)
    assert verbs.returncode == 0 and "train-independent" in verbs.stdout and "sample-independent" in verbs.stdout

    # the default target now includes the method's table
    dry = run(repo, "-m", "snakemake", "--profile", "profiles/ci", "--dry-run", timeout=180)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert "independent_table" in dry.stdout + dry.stderr

    result = run(repo, "-m", "snakemake", "--profile", "profiles/ci", "reports/tables/independent.csv", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    # trained by fit: config.json, log and a checkpoint with the method's kind
    run_dir = repo / "results/independent/digits"
    ckpt = torch.load(run_dir / "ckpt_0000060.pt", weights_only=False)
    assert ckpt["kind"] == "independent" and ckpt["step"] == 60
    log = pd.read_csv(run_dir / "train_log.csv")
    assert list(log.columns) == ["step", "loss", "lr"] and len(log) == 60
    assert list(pd.read_csv(run_dir / "train_times.runinfo.csv").step) == list(range(1, 61))  # wall times apart
    assert log.loss.iloc[-10:].mean() < log.loss.iloc[:10].mean()

    # the table: FID / IS (shared evaluate verb) and bits/dim (the method's entry), beside the floor
    table = pd.read_csv(repo / "reports/tables/independent.csv")
    ours = table[table.model == "independent"]
    assert {"FID", "IS", "bits/dim"} <= set(ours.metric)
    assert "real data (test split)" in set(table.model)
    # bits/dim against the closed form: -mean log softmax(logits) at the test pixels, / ln 2
    with np.load(repo / "data/processed/digits/test.npz") as arrays:
        test = arrays["images"]
    log_p = torch.log_softmax(ckpt["ema"]["logits"].double(), dim=1)  # (C, L, H, W)
    C, L, H, W = log_p.shape
    picked = log_p.permute(0, 2, 3, 1)[torch.arange(C)[:, None, None], torch.arange(H)[None, :, None],
                                       torch.arange(W)[None, None, :]]  # (C, H, W, L)
    x = torch.from_numpy(test).long()  # (N, C, H, W)
    expected = -picked.unsqueeze(0).expand(len(x), -1, -1, -1, -1).gather(-1, x.unsqueeze(-1)).mean() / math.log(2)
    assert ours[ours.metric == "bits/dim"].value.item() == pytest.approx(float(expected), rel=1e-6)

    # provenance of every cell, audited against the files
    cells = json.loads((repo / "reports/provenance/independent.json").read_text())
    assert any(c["model"] == "independent" and c["metric"] == "FID" for c in cells)
    audit = run(repo, "-m", "aiqn", "audit", timeout=120)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]

    # nothing was added to the real repository
    assert not (REPO / "src/aiqn/methods/independent").exists()
