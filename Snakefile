# Reproduction pipeline for "Autoregressive Quantile Networks for Generative Modeling"
# (Ostrovski, Dabney, Munos, ICML 2018). `snakemake --cores all` regenerates every table and
# figure from raw data; the DAG lives here only (dvc.yaml wraps its targets).
from snakemake.utils import min_version, validate

min_version("9.0")


def check_params_file(path):
    """Refuse, naming the file (and the line and column), a params file Snakemake would only call "not
    valid JSON or YAML": a YAML syntax error, an empty file, or one whose top level is not a mapping."""
    import yaml

    try:
        with open(path) as handle:
            doc = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"{path}:{where} YAML syntax error: {problem}; fix it and rerun") from None
    if not isinstance(doc, dict) or not doc:
        found = "is empty" if doc is None or doc == {} else f"holds a {type(doc).__name__}, not a mapping"
        raise ValueError(f"{path} {found}; it must be a mapping of the sections schemas/params.schema.yaml "
                         "describes (run, datasets, models, ...)")


check_params_file("params.yaml")


configfile: "params.yaml"


validate(config, "schemas/params.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/sweep.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/score.smk"
include: "rules/report.smk"
include: "rules/vae.smk"
include: "rules/agave.smk"
include: "rules/cqf.smk"


rule all:
    input:
        all_reports(),
    default_target: True
