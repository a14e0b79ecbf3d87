"""Start a crawl job: queued for a worker, or run here with ``--sync``."""
from __future__ import annotations

import argparse
import json

from django.core.management.base import BaseCommand, CommandError

from apps.characters.models import Character
from apps.core.api import ServiceError
from apps.crawling import services
from apps.crawling.models import CrawlJob
from apps.crawling.sources import sources


def job_summary(job: CrawlJob) -> dict:
    return {
        "id": job.pk, "source": job.source, "query": job.query,
        "character": job.character.slug if job.character_id else None, "quota": job.quota, "solo": job.solo,
        "auto_approve_min_confidence": job.auto_approve_min_confidence, "steps": [step["name"] for step in job.steps],
        "status": job.status, "stop_reason": job.stop_reason, "error": job.error,
        "last_error": job.error,  # the name before the job lifecycle was shared; kept for scripts that read it
        **job.counters(),
    }


class Command(BaseCommand):
    help = "Crawl images from a source for a character (or the unlabelled pool) through a crawl job."

    def add_arguments(self, parser):
        parser.add_argument("--source", required=True, help=f"one of: {', '.join(sources.names())}")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--character", help="character slug; images are labelled with it")
        who.add_argument("--unlabelled", action="store_true", help="images go to the unlabelled pool")
        parser.add_argument("--quota", type=int, required=True, help="new accepted images to collect")
        parser.add_argument("--query", default="", help="tags (default: the character's tags for the site), "
                            "a folder (local_folder) or a file of URLs (url_list)")
        parser.add_argument("--approve", action="store_true", help="accepted images are approved, not pending")
        parser.add_argument("--solo", action=argparse.BooleanOptionalAction, default=None,
                            help="only single-character posts (boorus: tagged solo); default: the source's default")
        parser.add_argument("--auto-approve", type=float, default=None, metavar="P",
                            help="approve new images whose label the model confirms at probability >= P (0 < P <= 1)")
        parser.add_argument("--max-pages", type=int, default=None)
        parser.add_argument("--threads", type=int, default=None)
        parser.add_argument("--sync", action="store_true", help="run here and now instead of in a worker")
        parser.add_argument("--json", action="store_true", help="print the job's status and counters as JSON")

    def handle(self, *args, **options):
        character = None
        if options["character"]:
            character = Character.objects.filter(slug=options["character"]).first()
            if character is None:
                raise CommandError(f"No character with slug {options['character']!r}")
        try:
            job = services.crawl_job_create(
                source=options["source"], character=character, quota=options["quota"], query=options["query"],
                approve=options["approve"], solo=options["solo"],
                auto_approve_min_confidence=options["auto_approve"], max_pages=options["max_pages"], threads=options["threads"],
                origin="cli", queue=not options["sync"],
            )
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        if options["sync"]:
            job = services.crawl_job_run(job_id=job.pk)
        if options["json"]:
            self.stdout.write(json.dumps(job_summary(job)))
        elif options["sync"]:
            self.stdout.write(f"crawl job {job.pk}: {job.status} ({job.stop_reason}); accepted {job.accepted}/"
                              f"{job.quota}, listed {job.listed}, known {job.skipped_known}, downloaded "
                              f"{job.downloaded}, errors {job.errors}")
        else:
            self.stdout.write(f"crawl job {job.pk} queued ({job.source}: {job.query!r}, quota {job.quota})")
        if job.status == CrawlJob.Status.FAILED:
            raise CommandError(f"crawl job {job.pk} failed: {job.error}")
