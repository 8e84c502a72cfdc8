"""Which rank of a run on several devices this process is, from the environment alone (no torch import: the entry
point and its Hydra callbacks ask before the heavy libraries load).

Lightning's launcher (strategy ``ddp``) starts ranks > 0 by running the command line again with ``LOCAL_RANK`` set;
torchrun and SLURM set ``RANK``. The process the user started is rank 0.
"""

from __future__ import annotations

import os


def launched_rank() -> int:
    """This process's rank, as Lightning's launcher (or torchrun) set it; 0 for the process the user started."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def helper() -> bool:
    """Whether this process is a rank > 0: it computes its part of the run and writes nothing."""
    return launched_rank() > 0
