"""What the pages read from the evaluation app. Filled in as that app lands; until then, nothing."""
from __future__ import annotations


def latest_character_metrics() -> dict[str, dict]:
    """character slug → {"accuracy": float, "tier": str, "run": id} from the latest evaluation run."""
    return {}
