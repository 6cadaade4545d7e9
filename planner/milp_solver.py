"""The MILP solver the placement search calls: HiGHS through PuLP where highspy is installed, warm-started from
the incumbent, else PuLP's bundled CBC; quiet on stdout either way."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys

import pulp


@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS prints a banner on C-level stdout when a process creates its first solver, which would
    corrupt JSON output; point file descriptor 1 at /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


if pulp.HiGHS().available():
    import highspy

    class _HiGHS(pulp.HiGHS):
        """PuLP's highspy-backed HiGHS, started from the variables' initial values (PuLP passes them to
        CBC but not to HiGHS), so a time-limited solve never returns worse than the incumbent."""

        def createAndConfigureSolver(self, lp):
            with _quiet_stdout():
                super().createAndConfigureSolver(lp)

        def callSolver(self, lp):
            start = highspy.HighsSolution()
            start.col_value = [v.varValue or 0.0 for v in lp.variables()]  # the column order buildSolverModel used
            start.value_valid = True
            lp.solverModel.setSolution(start)
            lp.solverModel.run()

else:
    _HiGHS = None


def solver(time_limit_s: float):
    """HiGHS where highspy is installed, else PuLP's bundled CBC (which takes the incumbent as a warm start)."""
    if _HiGHS is not None:
        return _HiGHS(msg=False, timeLimit=time_limit_s, threads=1, gapRel=1e-7)
    return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, warmStart=True, threads=1)


def solver_name() -> str:
    return f"HiGHS (highspy {importlib.metadata.version('highspy')})" if _HiGHS is not None else "CBC (PuLP)"
