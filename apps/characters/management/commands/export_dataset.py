import json

from django.core.management.base import BaseCommand, CommandError

from apps.characters.models import DatasetVersion
from apps.characters.services import dataset_version_export


class Command(BaseCommand):
    help = "Export a dataset version as train/ val/ test/ ImageFolder trees plus manifest.csv."

    def add_arguments(self, parser):
        parser.add_argument("version", help="id or name of the dataset version")
        parser.add_argument("path")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, version, path, **options):
        lookup = {"pk": int(version)} if version.isdigit() else {"name": version}
        try:
            dv = DatasetVersion.objects.get(**lookup)
        except DatasetVersion.DoesNotExist:
            raise CommandError(f"No dataset version {version!r}.") from None
        result = dataset_version_export(version=dv, path=path)
        if options["json"]:
            self.stdout.write(json.dumps(result, ensure_ascii=False))
        else:
            self.stdout.write(self.style.SUCCESS(f"Exported {dv.name} to {result['path']}: {result['splits']}"))
