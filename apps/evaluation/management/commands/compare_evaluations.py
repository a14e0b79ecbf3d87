"""``manage.py compare_evaluations BASE OTHER [--json]``: which characters got better or worse."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from apps.core.api import ServiceError
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import evaluation_runs_compare


def _pct(value) -> str:
    return "   n/a" if value is None else f"{value:6.1%}"


class Command(BaseCommand):
    help = "Compare two evaluation runs of the same split: headline deltas and per-character changes."

    def add_arguments(self, parser):
        parser.add_argument("base", type=int)
        parser.add_argument("other", type=int)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        runs = EvaluationRun.objects.in_bulk([options["base"], options["other"]])
        missing = [pk for pk in (options["base"], options["other"]) if pk not in runs]
        if missing:
            raise CommandError(f"No evaluation run {missing[0]}.")
        try:
            diff = evaluation_runs_compare(base=runs[options["base"]], other=runs[options["other"]])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            self.stdout.write(json.dumps(diff, default=str))
            return
        for name, values in diff["headline"].items():
            if values["delta"] is not None:
                self.stdout.write(f"{name:24} {values['before']:.4f} → {values['after']:.4f} ({values['delta']:+.4f})")
        self.stdout.write(", ".join(f"{n} {change}" for change, n in sorted(diff["counts"].items())))
        for row in diff["characters"]:
            if row["change"] != "same":
                self.stdout.write(f"{row['character'][:40]:40} {_pct(row['before'])} → {_pct(row['after'])}  "
                                  f"{row['change']}")
