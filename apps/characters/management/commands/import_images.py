import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.characters.services import images_import
from apps.characters.services.imports import count_entries
from apps.core.api import ServiceError


class Command(BaseCommand):
    help = "Import a folder or zip in the layout <series>_<character>/<files>. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--status", choices=["pending", "approved"], default=None,
                            help="Status of new images (default: approved, as the folder is a curated dataset)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the summary as one JSON object")

    def handle(self, *args, path, status, as_json: bool, **options):
        try:
            total = count_entries(path)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None
        except ServiceError as exc:  # a zip refused whole: unreadable, or entries that climb out of it
            raise CommandError(exc.message) from None
        with tqdm(total=total, unit="file", disable=as_json, file=self.stderr) as bar:
            summary = images_import(path=path, status=status, progress=bar.update)
        data = summary.as_dict()
        if as_json:
            self.stdout.write(json.dumps(data, ensure_ascii=False))
            return
        self.stdout.write(self.style.SUCCESS(
            f"Imported {data['new']} new images from {data['folders']} folders "
            f"({data['near_duplicates']} kept as near-duplicates in a group)."
        ))
        self.stdout.write(f"  already known (exact duplicates): {data['exact_duplicates']}")
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(data["refused"].items())) or "none"
        self.stdout.write(f"  refused: {data['refused_total']} ({refused})")
        if data["skipped_files"]:
            self.stdout.write(f"  skipped non-image files: {data['skipped_files']}")
        self.stdout.write(f"  now: {data['series']} series, {data['characters']} characters, {data['images']} images")

