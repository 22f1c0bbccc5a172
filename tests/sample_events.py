"""Loading the canonical sample events from events/ (one helper, as Powertools' tests do)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[1] / "events"


def load_event(relative: str) -> dict[str, Any]:
    """A fresh copy of ``events/<relative>`` (tests may mutate it)."""
    return copy.deepcopy(json.loads((EVENTS / relative).read_text()))
