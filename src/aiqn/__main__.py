"""`python -m aiqn VERB ...`: the entry point every Snakemake rule calls.

Inside a workflow run the verb runs in a child of the run's fork server, which has torch and the
package imported already (aiqn.core.forkserver); elsewhere, or where the server cannot stand in
for this process, it runs here. `python -m aiqn --fork-server SOCKET OWNER_PID` is the server
itself (the Snakefile's `onstart` starts it)."""

import sys

from aiqn.core.forkserver import SERVE_FLAG, run_in_server, server_main

if __name__ == "__main__":
    if sys.argv[1:2] == [SERVE_FLAG]:
        from aiqn.cli import main

        server_main(sys.argv[2:], run=main, package="aiqn")
    else:
        code = run_in_server(sys.argv[1:])
        if code is None:
            from aiqn.cli import main

            main()
        else:
            sys.exit(code)
