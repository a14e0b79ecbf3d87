"""``manage.py plan_collection --evaluation RUN [--create-jobs]``: the collection plan of an evaluation."""
from __future__ import annotations

import argparse
import json

from django.core.management.base import BaseCommand, CommandError

from apps.core.api import ServiceError
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import collection_plan_rows
from apps.evaluation.services import evaluation_plan_create


class Command(BaseCommand):
    help = "List per character the tier, the target and the sources that know it; --create-jobs queues the crawls."

    def add_arguments(self, parser):
        parser.add_argument("--evaluation", required=True, type=int, help="Evaluation run id")
        parser.add_argument("--sources", help="Comma-separated source names (default: KYARA_CRAWL_PLAN_SOURCES)")
        parser.add_argument("--include-low-support", action="store_true",
                            help="Also plan for low-support characters, by the tier their accuracy would give")
        parser.add_argument("--create-jobs", action="store_true", help="Create the crawl jobs")
        parser.add_argument("--solo", action=argparse.BooleanOptionalAction, default=True,
                            help="The jobs take only single-character posts (default: yes)")
        parser.add_argument("--auto-approve", type=float, default=None, metavar="P",
                            help="The jobs approve new images whose label the model confirms at probability >= P")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        run = EvaluationRun.objects.filter(pk=options["evaluation"]).first()
        if run is None:
            raise CommandError(f"No evaluation run {options['evaluation']}.")
        sources = [s.strip() for s in options["sources"].split(",") if s.strip()] if options["sources"] else None
        try:
            rows = collection_plan_rows(run=run, sources=sources, include_low_support=options["include_low_support"])
            jobs = evaluation_plan_create(
                run=run, sources=sources, include_low_support=options["include_low_support"], solo=options["solo"],
                auto_approve_min_confidence=options["auto_approve"],
            ) if options["create_jobs"] else []
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        plan = [{k: v for k, v in row.items() if k != "character_obj"} for row in rows]
        if options["json"]:
            self.stdout.write(json.dumps({"evaluation": run.pk, "plan": plan, "jobs": [
                {"id": j.pk, "source": j.source, "character": j.character.slug, "quota": j.quota} for j in jobs]}))
            return
        self.stdout.write(f"{'character':40} {'tier':6} {'acc':>6} {'support':>7} {'target':>6}  sources")
        for row in plan:
            tier = f"P{row['tier']}" + ("?" if row["provisional"] else "")
            accuracy = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.0%}"
            self.stdout.write(f"{row['character'][:40]:40} {tier:6} {accuracy:>6} {row['support']:7} "
                              f"{row['target']:6}  {', '.join(row['sources']) or '(no source has its tags)'}")
        self.stdout.write(f"{len(plan)} character(s), {sum(r['target'] for r in plan)} images wanted")
        if options["create_jobs"]:
            self.stdout.write(f"{len(jobs)} crawl job(s) created: {', '.join(str(j.pk) for j in jobs) or 'none'}")
