import json

from django.core.management.base import BaseCommand, CommandError

from apps.characters.services import media_check


class Command(BaseCommand):
    help = ("List image rows whose file is missing or not the bytes its sha256 names (and broken thumbnails); "
            "--repair restores, remakes or rejects them. Exits 1 while problems remain.")

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true",
                            help="remake thumbnails, restore originals from --from, reject what cannot be restored")
        parser.add_argument("--from", dest="sources", action="append", default=[], metavar="PATH",
                            help="a folder or zip holding copies of the images (e.g. what was imported); repeatable")
        parser.add_argument("--quick", action="store_true", help="compare sizes only, not sha256")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, repair, sources, quick, **options):
        try:
            report = media_check(repair=repair, sources=sources, quick=quick)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
        else:
            for problem in report.problems:
                done = f" -> {problem.repaired}" if problem.repaired else ""
                self.stdout.write(f"image {problem.image_id}: {problem.problem} {problem.path}{done}")
            self.stdout.write(f"{report.checked} images checked, {len(report.problems)} problems, "
                              f"{len(report.unresolved)} unresolved")
        if report.unresolved:
            raise SystemExit(1)
