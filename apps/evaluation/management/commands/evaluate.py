"""``manage.py evaluate --model VERSION --dataset-version V [--split test] [--json]``: evaluate here and now."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from apps.characters.models import DatasetVersion
from apps.core.api import ServiceError
from apps.evaluation.api.serializers import run_summary
from apps.evaluation.models import URGENT_FIRST, EvaluationRun
from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
from apps.inference.selectors import model_resolve


def _percent(value) -> str:
    return "   n/a" if value is None else f"{value:6.1%}"


class Command(BaseCommand):
    help = "Evaluate a model version on a dataset version's split (per-character metrics, tiers, leak check)."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="Model version name or alias")
        parser.add_argument("--dataset-version", required=True, help="Dataset version name or id")
        parser.add_argument("--split", default="test", choices=["train", "val", "test"])
        parser.add_argument("--apply-threshold", action="store_true",
                            help="Set the version's open-set threshold from val even if it has one already")
        parser.add_argument("--queue", action="store_true", help="Queue it for a worker instead of running here")
        parser.add_argument("--json", action="store_true", help="Print the run as one JSON object")

    def handle(self, *args, **options):
        ref = options["dataset_version"]
        dataset = DatasetVersion.objects.filter(name=ref).first() or (
            DatasetVersion.objects.filter(pk=int(ref)).first() if ref.isdigit() else None)
        if dataset is None:
            raise CommandError(f"No dataset version {ref!r}.")
        try:
            version, _alias = model_resolve(options["model"])
            run = evaluation_run_create(model_version=version, dataset_version=dataset, split=options["split"],
                                        apply_threshold=options["apply_threshold"], queue=options["queue"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        if not options["queue"]:
            run = evaluation_run_execute(run_id=run.pk)
        run.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(run_summary(run), default=str))
        else:
            self._report(run)
        if not options["queue"] and run.status != EvaluationRun.Status.SUCCEEDED:
            raise CommandError(f"evaluation {run.pk} {run.status}: {run.error}")

    def _report(self, run: EvaluationRun) -> None:
        out = self.stdout.write
        if run.status != EvaluationRun.Status.SUCCEEDED:
            out(f"evaluation {run.pk}: {run.status}")
            return
        leaks = run.leak_report or {}
        if leaks.get("leaked_images"):
            out(self.style.WARNING(
                f"LEAK CHECK: {leaks['leaked_images']} of {leaks['checked']} images also in {leaks['reference']} "
                f"({leaks['exact']} exact, {leaks['near']} near, {leaks['same_post']} same post); "
                f"top-1 without them {_percent(leaks.get('accuracy_without_leaks')).strip()}"))
        else:
            out(f"leak check: clean against {leaks.get('reference')} ({leaks.get('skipped') or 'no duplicates'})")
        out(f"evaluation {run.pk}: {run.model_version} on {run.dataset_version}/{run.split}, {run.images} images")
        out(f"top-1 {_percent(run.top1)}  top-5 {_percent(run.top5)}  mean per-class {_percent(run.mean_per_class_accuracy)}"
            f"  macro F1 {_percent(run.macro_f1)}  ECE {run.ece:.3f} (T = {run.calibration.get('temperature', 1.0):.3f}; "
            f"uncalibrated {'n/a' if run.ece_uncalibrated is None else f'{run.ece_uncalibrated:.3f}'})  open-set threshold "
            f"{'n/a' if run.suggested_threshold is None else f'{run.suggested_threshold:.3f}'}")
        out(f"latency p50 {run.latency_p50_ms:.2f} ms  p95 {run.latency_p95_ms:.2f} ms  "
            f"{run.images_per_second:.0f} images/s  on {run.device} ({run.backend})")
        if run.open_set.get("unseen_images"):
            o = run.open_set
            out(f"open set: AUROC {o['auroc']:.3f} known ({o['known_images']}) vs unseen ({o['unseen_images']}); "
                f"answered unknown: {_percent(o['unknown_rate_unseen']).strip()} of unseen, "
                f"{_percent(o['unknown_rate_known']).strip()} of known")
        for note in run.notes:
            out(f"note: {note}")
        out(f"{'character':40} {'support':>7} {'acc':>6} {'F1':>6}  tier  mistaken for")
        for row in run.characters.order_by(*URGENT_FIRST):
            if not row.support:
                continue
            tier = f"P{row.tier}" if row.tier else ("low" if row.low_support else "-")
            out(f"{row.label[:40]:40} {row.support:7} {_percent(row.accuracy)} {_percent(row.f1)}  {tier:4}  "
                f"{row.mistaken_for}")
