"""Write params.yaml overlaid with a profile's params, as `snakemake --profile` would read them:

    python scripts/profile_params.py profiles/ci/params.yaml      # rewrites params.yaml

DVC experiments vary params.yaml (`dvc exp run -S key=value`) and run dvc.yaml's stage, which reads
params.yaml alone. To experiment at a profile's size, run this once in a scratch clone (or a branch)
so that params.yaml *is* that profile's configuration: then `dvc exp run -S` changes what the run
reads, instead of a key the profile's overlay would mask (docs/experiments.md). The overlay follows
Snakemake's --configfile rule (snakemake.utils.update_config: mappings merge key by key, anything
else, lists included, is replaced). The result loses params.yaml's comments.
"""

import argparse
import sys
from pathlib import Path

import yaml
from snakemake.utils import update_config


def overlaid(base_path: Path, overlay_path: Path) -> dict:
    """params.yaml with the overlay's keys merged over it."""
    base = yaml.safe_load(base_path.read_text())
    overlay = yaml.safe_load(overlay_path.read_text())
    if not isinstance(overlay, dict):
        raise SystemExit(f"{overlay_path}: not a mapping of params sections")
    update_config(base, overlay)
    return base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlay", type=Path, help="a profile's params file, e.g. profiles/ci/params.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the file to rewrite")
    args = parser.parse_args(argv)
    merged = overlaid(args.params, args.overlay)
    header = (f"# params.yaml overlaid with {args.overlay} by scripts/profile_params.py (for DVC experiments at that "
              "size; docs/experiments.md)\n")
    args.params.write_text(header + yaml.safe_dump(merged, sort_keys=False, default_flow_style=None, width=120))
    print(f"wrote {args.params}: {len(merged)} sections, overlaid with {args.overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
