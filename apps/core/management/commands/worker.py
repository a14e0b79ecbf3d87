"""``manage.py worker --queue default|training``: the django-q cluster that serves one queue.

django-q2 picks the cluster (the queue) from the ``Q_CLUSTER_NAME`` environment variable, read when Django
starts, so this command sets it and replaces itself with ``manage.py qcluster``: signals (Ctrl-C, SIGTERM
from a process manager) reach the cluster directly.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.core.queue import DEFAULT_QUEUE, TRAINING_QUEUE, queue_cluster


class Command(BaseCommand):
    help = "Run the qcluster of one queue: default (crawls, suggestions, evaluations, cycles, schedules) or training."

    def add_arguments(self, parser):
        parser.add_argument("--queue", choices=[DEFAULT_QUEUE, TRAINING_QUEUE], default=DEFAULT_QUEUE)

    def handle(self, *args, **options):
        cluster = queue_cluster(options["queue"])
        env = {**os.environ, "Q_CLUSTER_NAME": cluster}
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        self.stdout.write(f"{options['queue']} queue: qcluster {cluster}")
        self.stdout.flush()
        os.execve(sys.executable, [sys.executable, manage, "qcluster"], env)
