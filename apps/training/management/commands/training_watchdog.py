"""Mark running training jobs whose process or worker died as failed (``lost``), so they can be resumed.

The scheduled sweep (``jobs: mark lost``, see ``manage.py sweep_jobs``) does this for every kind of job
every minute; this command is that sweep for training jobs only, kept for scripts that call it.
"""
from django.core.management.base import BaseCommand

from apps.core.jobs import jobs_mark_lost
from apps.training.models import TrainingJob


class Command(BaseCommand):
    help = "Detect training jobs whose process died and mark them lost (resumable)."

    def handle(self, *args, **options):
        lost = jobs_mark_lost(models=[TrainingJob]).get(TrainingJob._meta.label, [])
        self.stdout.write(f"{len(lost)} lost job(s){': ' + ', '.join(map(str, lost)) if lost else ''}")
