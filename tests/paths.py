"""Where the tests find the repository's sample assets and the golden reference data."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "samples" / "assets"
REFERENCE = Path(os.environ.get("EDGE_REFERENCE", REPO.parent / "shared" / "reference"))
