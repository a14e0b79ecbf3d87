"""Reads: a run's collection plan, two runs compared, and the loop (accuracy across runs, images across
dataset versions) per character."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Q

from apps.characters.models import Character, DatasetItem, Image
from apps.core.api import ServiceError
from apps.inference.models import ModelAlias

from .models import URGENT_FIRST, CharacterResult, EvaluationRun

HEADLINE = ("top1", "top5", "mean_per_class_accuracy", "macro_precision", "macro_recall", "macro_f1", "ece",
            "latency_p50_ms", "images_per_second")


def collection_plan_rows(*, run: EvaluationRun, sources: list[str] | None = None,
                         include_low_support: bool = False) -> list[dict]:
    """Per tiered character: tier, accuracy, support, target, and the sources that have its tags.

    Low-support characters are not tiered; with ``include_low_support`` they join the plan with the target
    of the tier their accuracy would give (``provisional``). Most urgent tier first.
    """
    from apps.crawling.services import sources_for_character

    condition = Q(tier__isnull=False)
    if include_low_support:
        condition |= Q(low_support=True, provisional_tier__isnull=False)
    results = (run.characters.filter(condition).select_related("character__series")
               .order_by(*URGENT_FIRST))
    rows = []
    for result in results:
        character = result.character
        rows.append({
            "character": result.label, "name": character.name if character else result.label,
            "tier": result.tier if result.tier is not None else result.provisional_tier,
            "provisional": result.tier is None, "tier_name": result.tier_name or "low support",
            "accuracy": result.accuracy, "support": result.support, "target": result.target,
            "sources": sources_for_character(character, sources) if character else [],
            "character_obj": character,
        })
    return rows


def evaluation_runs_compare(*, base: EvaluationRun, other: EvaluationRun) -> dict:
    """Headline deltas (other − base) and per-character accuracy deltas: which got better or worse."""
    if base.split != other.split:
        raise ServiceError("different_splits", f"Run {base.pk} is on {base.split} and run {other.pk} on "
                           f"{other.split}; compare runs of the same split.")
    before = {r.label: r for r in base.characters.all()}
    after = {r.label: r for r in other.characters.all()}
    rows = []
    for label in sorted(set(before) | set(after)):
        a, b = before.get(label), after.get(label)
        acc_a = a.accuracy if a else None
        acc_b = b.accuracy if b else None
        if acc_a is None and acc_b is None:
            continue  # support 0 in both: nothing was measured
        if acc_a is None:
            change, delta = "new", None
        elif acc_b is None:
            change, delta = "gone", None
        else:
            delta = acc_b - acc_a
            change = "better" if delta > 0 else "worse" if delta < 0 else "same"
        rows.append({"character": label, "before": acc_a, "after": acc_b, "delta": delta, "change": change,
                     "support_before": a.support if a else 0, "support_after": b.support if b else 0,
                     "tier_before": a.tier if a else None, "tier_after": b.tier if b else None})
    rows.sort(key=lambda r: (r["delta"] is None, r["delta"] or 0, r["character"]))
    counts = defaultdict(int)
    for row in rows:
        counts[row["change"]] += 1
    headline = {}
    for name in HEADLINE:
        x, y = getattr(base, name), getattr(other, name)
        headline[name] = {"before": x, "after": y, "delta": y - x if x is not None and y is not None else None}
    return {"base": base.pk, "other": other.pk, "headline": headline, "counts": dict(counts), "characters": rows}


def label_issue_image_ids(run: EvaluationRun) -> list[int]:
    """The run's suspect images that still wait for a person, most suspect first: approved and still labelled
    as the run found them (a rejection or relabel since then settled the doubt). The review queue filters on it."""
    issues = run.label_issues or []
    current = set(Image.objects.filter(pk__in=[issue["image"] for issue in issues], status=Image.Status.APPROVED)
                  .values_list("pk", "character__slug"))
    return [issue["image"] for issue in issues if (issue["image"], issue["label"]) in current]


def character_history(*, character_ids: list[int], split: str | None = None) -> dict[int, dict]:
    """For each character: its accuracy in every succeeded run (oldest first) and its image count in every
    dataset version (by split), so one can see whether collected images helped. Two queries."""
    history: dict[int, dict] = {pk: {"runs": [], "dataset_versions": []} for pk in character_ids}
    results = (CharacterResult.objects.filter(character_id__in=character_ids, run__status=EvaluationRun.Status.SUCCEEDED,
                                              support__gt=0)
               .order_by("run__created_at", "run_id")
               .values("character_id", "run_id", "run__created_at", "run__split", "run__model_version__name",
                       "run__dataset_version__name", "accuracy", "support", "tier"))
    if split:
        results = results.filter(run__split=split)
    for row in results:
        history[row["character_id"]]["runs"].append({
            "run": row["run_id"], "at": row["run__created_at"], "split": row["run__split"],
            "model_version": row["run__model_version__name"], "dataset_version": row["run__dataset_version__name"],
            "accuracy": row["accuracy"], "support": row["support"], "tier": row["tier"]})
    counts = (DatasetItem.objects.filter(character_id__in=character_ids)
              .values("character_id", "version_id", "version__name", "version__created_at", "split")
              .annotate(n=Count("id")).order_by("version__created_at", "version_id"))
    versions: dict[tuple[int, int], dict] = {}
    for row in counts:
        key = (row["character_id"], row["version_id"])
        entry = versions.get(key)
        if entry is None:
            entry = versions[key] = {"dataset_version": row["version__name"], "at": row["version__created_at"],
                                     "train": 0, "val": 0, "test": 0, "total": 0}
            history[row["character_id"]]["dataset_versions"].append(entry)
        entry[row["split"]] = row["n"]
        entry["total"] += row["n"]
    return history


def evaluation_loop(*, run: EvaluationRun) -> list[dict]:
    """The loop for every character the run measured: its accuracy across runs of the same split and its
    images across dataset versions."""
    results = list(run.characters.filter(character__isnull=False, support__gt=0).order_by("label"))
    history = character_history(character_ids=[r.character_id for r in results], split=run.split)
    return [{"character": r.label, "accuracy": r.accuracy, "tier": r.tier, **history[r.character_id]}
            for r in results]


def character_slug_history(slug: str) -> dict:
    character = Character.objects.filter(slug=slug).first()
    if character is None:
        raise ServiceError("unknown_character", f"No character {slug!r}.", status_code=404)
    return {"character": slug, **character_history(character_ids=[character.pk])[character.pk]}


def runs_with_relations():
    return EvaluationRun.objects.select_related("model_version", "dataset_version").order_by("-created_at", "-id")


def latest_succeeded_run() -> EvaluationRun | None:
    return runs_with_relations().filter(status=EvaluationRun.Status.SUCCEEDED).first()


def latest_character_metrics() -> tuple[EvaluationRun | None, dict[str, dict]]:
    """The latest succeeded run and, per character slug, its accuracy and tier in that run."""
    run = latest_succeeded_run()
    if run is None:
        return None, {}
    quality = {}
    for row in run.characters.filter(support__gt=0):
        quality[row.label] = {"accuracy": row.accuracy, "tier": row.tier, "tier_name": row.tier_name,
                              "low_support": row.low_support, "target": row.target}
    return run, quality


# What "beats the current model" weighs: overall accuracy and the accuracy of the average character.
PROMOTION_METRICS = (("top1", "top-1"), ("mean_per_class_accuracy", "mean per class"))


def alias_comparison(run: EvaluationRun, *, alias: str = "default") -> dict:
    """Whether ``run``'s model beats the one ``alias`` points at, judged on the same dataset version and split
    (the latest succeeded run of that model there): better on top-1 or mean per class accuracy and worse on
    neither. ``beats`` says it, ``reason`` says why a person may or may not promote it, ``rows`` are the
    numbers side by side. No model behind the alias yet: the first one beats nothing and may be promoted."""
    current = ModelAlias.objects.select_related("version").filter(name=alias).first()
    out = {"alias": alias, "current": current.version if current else None, "current_run": None, "rows": [],
           "beats": False, "reason": ""}
    where = f"{run.dataset_version.name}/{run.split}"
    if run.status != EvaluationRun.Status.SUCCEEDED:
        out["reason"] = f"Evaluation {run.pk} is {run.status}; only a finished evaluation can promote its model."
    elif current is None:
        out.update(beats=True, reason=f"No model is {alias!r} yet: {run.model_version.name} would be the first.")
    elif current.version_id == run.model_version_id:
        out["reason"] = f"{run.model_version.name} is {alias!r} already."
    else:
        other = (runs_with_relations().filter(status=EvaluationRun.Status.SUCCEEDED, model_version=current.version,
                                              dataset_version=run.dataset_version, split=run.split).first())
        out["current_run"] = other
        if other is None:
            out["reason"] = (f"{current.version.name} ({alias}) has no evaluation on {where} to compare with; "
                             "evaluate it there first.")
        else:
            out["rows"] = [{"metric": name, "label": label, "candidate": getattr(run, name),
                            "current": getattr(other, name), "delta": getattr(run, name) - getattr(other, name)}
                           for name, label in PROMOTION_METRICS]
            for row in out["rows"]:
                row["change"] = f"{row['delta'] * 100:+.1f} pt"
            better = [row["label"] for row in out["rows"] if row["delta"] > 0]
            worse = [row["label"] for row in out["rows"] if row["delta"] < 0]
            out["beats"] = bool(better) and not worse
            shown = ", ".join(f"{row['label']} {row['candidate']:.1%} vs {row['current']:.1%}" for row in out["rows"])
            out["reason"] = (f"{run.model_version.name} beats {current.version.name} on {where}: {shown}."
                             if out["beats"] else
                             f"{run.model_version.name} does not beat {current.version.name} on {where}"
                             f"{' (worse on ' + ', '.join(worse) + ')' if worse else ''}: {shown}.")
    return out
