"""Put an architecture's ImageNet weights where ``weights: auto`` finds them on a machine without internet.

    manage.py fetch_weights [--arch mobilenet_v2]                            # download into KYARA_WEIGHTS_DIR
    manage.py fetch_weights --from /media/usb/mobilenet_v2-b0353104.pth     # copy a file fetched elsewhere

Either way the file is checked against the hash torchvision publishes in its name before it is kept.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.registry import RegistryError
from apps.ml.architectures import WeightsError, architectures, download_imagenet, import_imagenet_file


class Command(BaseCommand):
    help = "Download (or copy from a file) an architecture's ImageNet weights into KYARA_WEIGHTS_DIR."

    def add_arguments(self, parser):
        parser.add_argument("--arch", default="mobilenet_v2", help="Architecture name (default mobilenet_v2)")
        parser.add_argument("--from", dest="source", help="A weights file downloaded elsewhere: check and copy it")
        parser.add_argument("--dir", help="Where to put it (default KYARA_WEIGHTS_DIR)")

    def handle(self, *args, **options):
        try:
            arch = architectures.get(options["arch"])
        except RegistryError as exc:
            raise CommandError(str(exc)) from exc
        folder = Path(options["dir"] or settings.KYARA_WEIGHTS_DIR)
        try:
            if options["source"]:
                path = import_imagenet_file(arch, Path(options["source"]), folder)
            else:
                path = download_imagenet(arch, folder)
        except WeightsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{arch.name}: ImageNet weights in {path}; training with weights auto starts from them.")
