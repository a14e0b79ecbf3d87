import json

from django.core.management.base import BaseCommand, CommandError

from apps.characters.services import LeakError, dataset_version_freeze
from apps.core.api import ServiceError


class Command(BaseCommand):
    help = "Freeze a dataset version: stratified, group-aware splits with a leak report as a gate."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--val", type=float, default=0.15)
        parser.add_argument("--test", type=float, default=0.15)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--min-images", type=int, default=6)
        parser.add_argument("--notes", default="")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **o):
        try:
            version = dataset_version_freeze(name=o["name"], val=o["val"], test=o["test"], seed=o["seed"],
                                             min_images=o["min_images"], notes=o["notes"])
        except LeakError as exc:
            pairs = exc.details["report"]["near_duplicate_pairs"][:50]
            listing = "\n".join(f"  images {p['a']} and {p['b']} (distance {p['distance']}, {p['splits']})" for p in pairs)
            raise CommandError(f"{exc.message}\n{listing}") from None
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        out = {
            "id": version.pk,
            "name": version.name,
            "content_hash": version.content_hash,
            "counts": version.counts["splits"],
            "characters": version.counts["num_characters"],
            "excluded": version.excluded,
            "leaks": version.leak_report["leaks"],
        }
        if o["json"]:
            self.stdout.write(json.dumps(out, ensure_ascii=False))
            return
        self.stdout.write(self.style.SUCCESS(f"Froze dataset version {version.name} (id {version.pk})."))
        self.stdout.write(f"  content hash: {version.content_hash}")
        self.stdout.write(f"  splits: {out['counts']} over {out['characters']} characters; leaks: {out['leaks']}")
        if version.excluded:
            self.stdout.write(f"  left out: {len(version.excluded)} characters with too few images")
