"""How worker processes start under forkserver: the main script is imported once, not per worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = """
    import os
    import workpool

    with open(os.environ["RUNS_FILE"], "a") as runs:
        runs.write(f"{os.getpid()}\\n")


    def square(x):
        return x * x


    if __name__ == "__main__":
        with workpool.Pool(3, backend="process", start_method="forkserver") as pool:
            assert list(pool.map(square, range(30), chunksize=1)) == [x * x for x in range(30)]
            assert pool.stats().workers == 3
"""


@pytest.mark.skipif(sys.platform != "linux", reason="forkserver as tested here: Linux")
def test_forkserver_imports_the_main_script_once_for_all_workers(tmp_path: Path) -> None:
    """The main script runs in the parent and once in the forkserver, not again in each worker."""
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(SCRIPT))
    runs = tmp_path / "runs"
    env = {"RUNS_FILE": str(runs), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script)], env=env, timeout=60, check=False)
    assert done.returncode == 0
    assert len(runs.read_text().split()) == 2  # the parent, the forkserver: no worker
