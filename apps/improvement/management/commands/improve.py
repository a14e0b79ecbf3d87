"""Start an improvement cycle: ``manage.py improve --evaluation RUN [--characters SLUG ...] [--sources NAME ...]
[--auto-approve P] [--epochs N] [--image-size N] [--promote-if-better] [--sync] [--json]``."""
from __future__ import annotations

import json
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.api import ServiceError
from apps.evaluation.models import EvaluationRun
from apps.improvement.api.serializers import CycleSerializer
from apps.improvement.models import Cycle, Stage, StageStatus
from apps.improvement.services import cycle_advance, cycle_create


class Command(BaseCommand):
    help = ("Plan, crawl, review, freeze, train, evaluate and promote from an evaluation run, as one cycle that "
            "the default qcluster advances (or --sync: here, until it ends or waits for a person).")

    def add_arguments(self, parser):
        parser.add_argument("--evaluation", type=int, required=True, help="The evaluation run to plan from")
        parser.add_argument("--characters", nargs="+", default=[], metavar="SLUG",
                            help="Collect only for these characters (default: the whole plan)")
        parser.add_argument("--sources", nargs="+", default=[], metavar="NAME",
                            help="Crawl these sources (default: KYARA_CRAWL_PLAN_SOURCES)")
        parser.add_argument("--auto-approve", type=float, default=None, metavar="P",
                            help="Approve crawled images whose label the model confirms at P or more")
        parser.add_argument("--epochs", type=int, help="Training epochs (default: as default's training job)")
        parser.add_argument("--image-size", type=int, help="Training image size (default: as default's job)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="Any other training setting over default's, e.g. --set recipe=finetune")
        parser.add_argument("--margin", type=float, default=None,
                            help="Top-1 gain needed on every compared split (default: KYARA_CYCLE_PROMOTE_MARGIN)")
        parser.add_argument("--promote-if-better", action="store_true",
                            help="Point default at the new model when it is better by the margin")
        parser.add_argument("--skip-waiting", action="store_true",
                            help="Do not wait for a person to review the crawled images still pending")
        parser.add_argument("--sync", action="store_true",
                            help="Run it here, its crawls, training and evaluations included, until it ends or "
                                 "waits for a person (no worker needed)")
        parser.add_argument("--json", action="store_true", help="Print the cycle as one JSON object")

    def handle(self, *args, **options):
        run = EvaluationRun.objects.filter(pk=options["evaluation"]).first()
        if run is None:
            raise CommandError(f"No evaluation run {options['evaluation']}; list them with GET /api/v1/evaluations/.")
        overrides = {}
        for item in options["set"]:
            key, sep, raw = item.partition("=")
            if not sep:
                raise CommandError(f"--set takes KEY=VALUE, got {item!r}")
            try:
                overrides[key.strip().replace("-", "_")] = json.loads(raw)
            except json.JSONDecodeError:
                overrides[key.strip().replace("-", "_")] = raw
        try:
            cycle = cycle_create(
                from_evaluation=run, characters=options["characters"], sources=options["sources"],
                auto_approve_min_confidence=options["auto_approve"], epochs=options["epochs"],
                image_size=options["image_size"], config_overrides=overrides, margin=options["margin"],
                promote_if_better=options["promote_if_better"], skip_waiting=options["skip_waiting"],
                origin=Cycle.Origin.CLI, queue=not options["sync"])
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        if options["sync"]:
            settings.KYARA_RUN_TASKS_INLINE = True  # every task the cycle queues runs in this process
            cycle = self._advance_until_settled(cycle)
        cycle.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(CycleSerializer(cycle).data))
        else:
            self.stdout.write(f"cycle {cycle.pk}: {cycle.status} at its {cycle.stage} stage"
                              + (f"; {cycle.hold_reason}" if cycle.hold_reason else "")
                              + ("; default promoted" if cycle.promoted else ""))
        if cycle.status == Cycle.Status.FAILED:
            raise CommandError(f"cycle {cycle.pk} failed: {cycle.error}")

    def _advance_until_settled(self, cycle: Cycle) -> Cycle:
        """Advance until the cycle ends or waits for a person (a child running elsewhere is waited for), saying
        on stderr where it is whenever that changes."""
        said = None
        while True:
            cycle = cycle_advance(cycle_id=cycle.pk)
            record = cycle.stage_record(cycle.stage) or {}
            where = (cycle.stage, record.get("status"), record.get("detail"))
            if where != said:
                self.stderr.write(f"cycle {cycle.pk}: {cycle.stage} {record.get('status')}: {record.get('detail') or ''}")
                said = where
            if cycle.status in Cycle.FINISHED or (cycle.stage == Stage.WAIT
                                                  and record.get("status") == StageStatus.WAITING):
                return cycle
            time.sleep(2)
