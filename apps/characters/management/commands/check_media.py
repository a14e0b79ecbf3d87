import json

from django.core.management.base import BaseCommand, CommandError

from apps.characters.services import media_check
from apps.characters.services.media import STRAY_GRACE_SECONDS


class Command(BaseCommand):
    help = ("List image rows whose file is missing or not the bytes its sha256 names (and broken thumbnails), and "
            "stray files (a name no row names, an unfinished temporary write) older than --grace; --repair restores, "
            "remakes or rejects the rows and deletes the strays. Exits 1 while problems remain.")

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true",
                            help="remake thumbnails, restore originals from --from, reject what cannot be restored")
        parser.add_argument("--from", dest="sources", action="append", default=[], metavar="PATH",
                            help="a folder or zip holding copies of the images (e.g. what was imported); repeatable")
        parser.add_argument("--quick", action="store_true", help="compare sizes only, not sha256")
        parser.add_argument("--grace", type=float, default=STRAY_GRACE_SECONDS, metavar="SECONDS",
                            help="a stray file younger than this may belong to an ingest still running: left alone "
                                 "(default %(default).0f)")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, repair, sources, quick, grace, **options):
        try:
            report = media_check(repair=repair, sources=sources, quick=quick, grace=grace)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
        else:
            for problem in report.problems:
                done = f" -> {problem.repaired}" if problem.repaired else ""
                self.stdout.write(f"image {problem.image_id}: {problem.problem} {problem.path}{done}")
            for stray in report.strays:
                done = " -> removed" if stray.removed else ""
                self.stdout.write(f"stray file ({stray.kind}, {stray.age_seconds:.0f} s old): {stray.path}{done}")
            self.stdout.write(f"{report.checked} images checked, {len(report.problems)} problems, "
                              f"{len(report.strays)} stray files, {len(report.unresolved)} unresolved")
        if report.unresolved:
            raise SystemExit(1)
