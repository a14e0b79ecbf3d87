"""Mark jobs whose process died as lost, now: ``manage.py sweep_jobs [--schedule]``.

The same sweep runs every KYARA_JOB_SWEEP_MINUTES as the django-q schedule ``jobs: mark lost``, which
``migrate`` creates; ``--schedule`` (re)creates it by hand. ``training_watchdog`` is this sweep for
training jobs only.
"""
from django.core.management.base import BaseCommand

from apps.core.jobs import SWEEP_SCHEDULE, jobs_mark_lost, lost_sweep_schedule


class Command(BaseCommand):
    help = "Mark running jobs (crawl, training, evaluation) whose process died as failed (lost)."

    def add_arguments(self, parser):
        parser.add_argument("--schedule", action="store_true",
                            help=f"Also create or update the django-q schedule {SWEEP_SCHEDULE!r}")

    def handle(self, *args, schedule: bool, **options):
        if schedule:
            made = lost_sweep_schedule()
            self.stdout.write(f"schedule {SWEEP_SCHEDULE!r}: every {made.minutes} minute(s)" if made
                              else f"schedule {SWEEP_SCHEDULE!r} removed (KYARA_JOB_SWEEP_MINUTES=0)")
        lost = jobs_mark_lost()
        total = sum(len(ids) for ids in lost.values())
        detail = "; ".join(f"{label} {', '.join(map(str, ids))}" for label, ids in lost.items())
        self.stdout.write(f"{total} lost job(s){': ' + detail if detail else ''}")
