"""Where genrec keeps what must outlive a checkout: benchmark runs, their checkpoints, shared models.

`$GENREC_HOME`, else `$GENREC_CACHE`, else `~/.cache/genrec`. A benchmark seed trained for hours
lives here (`bench/accuracy/DATASET/seedN`), not in the work tree, so replacing the checkout (or a
session ending) loses nothing and the next call on the same machine resumes from its checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path


def genrec_home() -> Path:
    """The folder for state that outlives the checkout (see the module docstring)."""
    for name in ("GENREC_HOME", "GENREC_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    return Path.home() / ".cache" / "genrec"
