"""Start a training job: ``manage.py train --dataset-version V [--arch NAME] [--epochs N] ... [--sync] [--json]``."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from apps.characters.models import DatasetVersion
from apps.core.api import ServiceError
from apps.training.api.serializers import job_summary
from apps.training.services import training_job_start
from apps.training.tasks import launch_training_job


def _value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


class Command(BaseCommand):
    help = "Train a model on a frozen dataset version (queued for a worker, or --sync to wait here)."

    def add_arguments(self, parser):
        parser.add_argument("--dataset-version", required=True, help="Dataset version id or name")
        parser.add_argument("--arch", dest="architecture", help="Architecture name (mobilenet_v2, simple, ...)")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--image-size", type=int)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--lr", type=float)
        parser.add_argument("--weights", help="auto (default: ImageNet weights where they can be had, else from "
                                              "scratch), none, imagenet or the path of a weights file")
        parser.add_argument("--recipe", help="auto (default: finetune for pretrained weights, scratch otherwise), "
                                             "finetune or scratch; any value can still be set on its own")
        parser.add_argument("--device", help="auto, cpu, cuda, mps")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="Any other setting, e.g. --set optimizer=adamw --set label_smoothing=0.1")
        parser.add_argument("--name", default="")
        parser.add_argument("--sync", action="store_true", help="Run the job now (in a child process) and wait")
        parser.add_argument("--json", action="store_true", help="Print the job as one JSON object")

    def handle(self, *args, **options):
        ref = options["dataset_version"]
        version = DatasetVersion.objects.filter(pk=int(ref)).first() if ref.isdigit() else None
        version = version or DatasetVersion.objects.filter(name=ref).first()
        if version is None:
            raise CommandError(f"No dataset version {ref!r}; freeze one first (manage.py freeze_dataset).")
        config = {}
        for key in ("architecture", "epochs", "image_size", "batch_size", "lr", "weights", "recipe", "device"):
            if options[key] is not None:
                config[key] = options[key]
        for item in options["set"]:
            key, sep, raw = item.partition("=")
            if not sep:
                raise CommandError(f"--set takes KEY=VALUE, got {item!r}")
            config[key.strip().replace("-", "_")] = _value(raw)
        try:
            job = training_job_start(dataset_version=version, config=config, name=options["name"],
                                     queue=not options["sync"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        if options["sync"]:
            launch_training_job(job.pk)
        job.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(job_summary(job)))
        else:
            self.stdout.write(f"job {job.pk}: {job.status}" + (f", model version {job.model_version}"
                                                               if job.model_version_id else ""))
        if options["sync"] and job.status != job.Status.SUCCEEDED:
            raise CommandError(f"job {job.pk} {job.status}: {job.error or job.stop_reason}")
