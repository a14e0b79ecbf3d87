"""What the evaluation pages show, shaped for tables and charts."""
from __future__ import annotations

from apps.characters.models import Character
from apps.characters.selectors import example_images
from apps.evaluation import selectors as evaluation_selectors
from apps.evaluation.models import URGENT_FIRST, EvaluationRun

TIER_COLORS = {1: "#dc2626", 2: "#f97316", 3: "#eab308"}
MEASURED_COLOR = "#16a34a"  # measured, no tier: good enough
LOW_SUPPORT_COLOR = "#94a3b8"


def tier_color(row) -> str:
    if row.low_support:
        return LOW_SUPPORT_COLOR
    return TIER_COLORS.get(row.tier, MEASURED_COLOR if row.tier is None else "#7c3aed")


def run_page(run: EvaluationRun) -> dict:
    """Tables and chart data of one run: per-character accuracy by tier, the confusion matrix, the most
    confused pairs with pictures of both characters, calibration, and each character's history."""
    rows = list(run.characters.select_related("character").order_by(*URGENT_FIRST))
    names = {row.label: (row.character.name if row.character else row.label) for row in rows}
    for row in rows:
        row.mistaken_name = names.get(row.mistaken_for, row.mistaken_for)
    measured = sorted((r for r in rows if r.accuracy is not None), key=lambda r: (r.accuracy, r.label))
    accuracy = {
        "labels": [names[r.label] for r in measured], "slugs": [r.label for r in measured],
        "accuracy": [r.accuracy for r in measured], "support": [r.support for r in measured],
        "colors": [tier_color(r) for r in measured],
        "tiers": [r.tier_name or ("low support" if r.low_support else "no tier") for r in measured],
    }
    matrix = run.confusion_matrix or []
    normalized = []
    for line in matrix:
        total = sum(line)
        normalized.append([round(v / total, 4) if total else 0 for v in line])
    confusion = {"labels": [names.get(label, label) for label in run.labels or []], "counts": matrix,
                 "normalized": normalized}
    pairs = list(run.confused_pairs or [])[:10]
    pictures = example_images([p["true"] for p in pairs] + [p["predicted"] for p in pairs], per_character=3)
    for pair in pairs:
        pair["true_name"] = names.get(pair["true"], pair["true"])
        pair["predicted_name"] = names.get(pair["predicted"], pair["predicted"])
        pair["true_images"] = pictures.get(pair["true"], {}).get("images", [])
        pair["predicted_images"] = pictures.get(pair["predicted"], {}).get("images", [])
    history = evaluation_selectors.evaluation_loop(run=run) if run.status == EvaluationRun.Status.SUCCEEDED else []
    for entry in history:
        entry["name"] = names.get(entry["character"], entry["character"])
        for point in entry["runs"]:
            point["at"] = point["at"].isoformat()
        for point in entry["dataset_versions"]:
            point["at"] = point["at"].isoformat()
    return {
        "rows": rows, "names": names, "pairs": pairs,
        "charts": {"accuracy": accuracy, "confusion": confusion, "reliability": run.reliability or [],
                   "reliability_uncalibrated": (run.calibration or {}).get("reliability_uncalibrated", []),
                   "history": history, "run": run.pk},
    }


def compare_page(*, base: EvaluationRun, other: EvaluationRun) -> dict:
    """Two runs side by side (the evaluation app's comparison), with display names."""
    result = evaluation_selectors.evaluation_runs_compare(base=base, other=other)
    names = dict(Character.objects.filter(slug__in=[r["character"] for r in result["characters"]])
                 .values_list("slug", "name"))
    for row in result["characters"]:
        row["name"] = names.get(row["character"], row["character"])
    result["headline_rows"] = [headline_row(name, values) for name, values in result["headline"].items()]
    measured = [r for r in result["characters"] if r["delta"] is not None]
    result["chart"] = {"labels": [r["name"] for r in measured], "delta": [r["delta"] for r in measured]}
    return result


HEADLINE_LABELS = {"top1": "top-1", "top5": "top-5", "mean_per_class_accuracy": "mean per class",
                   "macro_precision": "macro precision", "macro_recall": "macro recall", "macro_f1": "macro F1",
                   "ece": "calibration error (ECE)", "latency_p50_ms": "latency p50", "images_per_second": "images/s"}


def headline_row(name: str, values: dict) -> dict:
    """One headline metric of a comparison as a person reads it: shares in %, changes in points."""
    before, after, delta = values["before"], values["after"], values["delta"]

    def shown(value, signed=False):
        if value is None:
            return "—"
        sign = "+" if signed and value > 0 else ""
        if name in ("ece",):
            return f"{sign}{value:.3f}"
        if name == "latency_p50_ms":
            return f"{sign}{value:.1f} ms"
        if name == "images_per_second":
            return f"{sign}{value:.1f}"
        return f"{sign}{value * 100:.1f}{' pt' if signed else '%'}"

    better = None if delta is None or delta == 0 else (delta < 0 if name in ("ece", "latency_p50_ms") else delta > 0)
    return {"label": HEADLINE_LABELS.get(name, name), "before": shown(before), "after": shown(after),
            "delta": shown(delta, signed=True), "better": better}
