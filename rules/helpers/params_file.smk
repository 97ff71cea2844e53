# The params file's first check, before `configfile:` reads it (the Snakefile includes this first).


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
        raise ValueError(
            f"{path} {found}; it must be a mapping of the sections schemas/params.schema.yaml "
            "describes (run, datasets, models, ...)"
        )
