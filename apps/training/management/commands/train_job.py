"""Run one training job in this process: ``manage.py train_job ID [--resume]``; also under torchrun."""
from django.core.management.base import BaseCommand, CommandError

from apps.core.api import ServiceError
from apps.training.runner import run_job


class Command(BaseCommand):
    help = "Train job ID in this process (the launcher task starts this as a child process)."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)
        parser.add_argument("--resume", action="store_true", help="Continue from the job's last checkpoint")
        parser.add_argument("--token", default="", help="Launch token (set by the launcher task)")

    def handle(self, *args, job_id, resume, token, **options):
        try:
            job = run_job(job_id, resume=resume, token=token)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"job {job.pk}: {job.status} ({job.stop_reason or 'running'}), "
                          f"{job.epochs_run} epochs, best val accuracy {job.best_val_accuracy}")
