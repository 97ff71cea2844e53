#!/usr/bin/env bash
# The workflow's lint and format check (.ci/run runs it; docs/architecture.md, "Lint and format"):
# `snakemake --lint` on the default params and on each profile's overlay, then `snakefmt --check`.
# The rules import the package at parse time, hence PYTHONPATH=src. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
for overlay in "" profiles/ci/params.yaml profiles/paper/params.yaml profiles/mnist/params.yaml \
        profiles/photos8/params.yaml profiles/long/params.yaml; do
    echo "snakemake --lint ${overlay:+--configfile $overlay}"
    python -m snakemake --lint ${overlay:+--configfile "$overlay"} >/tmp/aiqn-lint.$$ 2>&1 || {
        cat /tmp/aiqn-lint.$$; rm -f /tmp/aiqn-lint.$$
        echo "snakemake --lint found the above (overlay: ${overlay:-none}); fix them or explain in docs/architecture.md" >&2
        exit 1
    }
    rm -f /tmp/aiqn-lint.$$
done
if ! python -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
    echo "snakefmt needs Python 3.11+ (this is $(python -V)): the format check is skipped" >&2
    exit 0
fi
snakefmt --check Snakefile rules/ || {
    echo "snakefmt --check failed: run 'snakefmt Snakefile rules/' and commit the result" >&2
    exit 1
}
