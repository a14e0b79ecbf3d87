"""Mark running training jobs whose process or worker died as failed (``lost``), so they can be resumed."""
from django.core.management.base import BaseCommand

from apps.training.services import training_jobs_detect_lost


class Command(BaseCommand):
    help = "Detect training jobs whose process died and mark them lost (resumable)."

    def handle(self, *args, **options):
        lost = training_jobs_detect_lost()
        self.stdout.write(f"{len(lost)} lost job(s){': ' + ', '.join(map(str, lost)) if lost else ''}")
