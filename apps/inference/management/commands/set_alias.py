from django.core.management.base import BaseCommand, CommandError

from apps.core.api import ServiceError
from apps.inference import services


class Command(BaseCommand):
    help = "Point a model alias (default, candidate, ...) at a model version, or roll it back; recorded in its history."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the alias, e.g. default")
        parser.add_argument("version", nargs="?", help="a model version name (or another alias)")
        parser.add_argument("--why", default="", help="recorded in the alias history")
        parser.add_argument("--force", action="store_true", help="override the promotion gate")
        parser.add_argument("--rollback", action="store_true", help="undo the alias's last change instead")

    def handle(self, *args, name, version, why, force, rollback, **options):
        if rollback == bool(version):
            raise CommandError("Give either a VERSION or --rollback.")
        try:
            if rollback:
                change = services.model_alias_rollback(name=name, why=why)
            else:
                change = services.model_alias_set(name=name, version=version, why=why or "set_alias command",
                                                  force=force)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(self.style.SUCCESS(
            f"{change.alias}: {change.from_version or '(none)'} → {change.to_version} ({change.kind})"))
