from django.core.management.base import BaseCommand, CommandError

from apps.core.api import ServiceError
from apps.inference import services
from apps.inference.selectors import model_resolve


class Command(BaseCommand):
    help = ("Fit a model version's temperature (calibrated probabilities) on a split it did not train on, through "
            "the serving path; every process then serves, evaluates and auto-approves with it.")

    def add_arguments(self, parser):
        parser.add_argument("version", help="a model version name or an alias")
        parser.add_argument("--split", default="val", choices=["val", "test"],
                            help="val for a model that was not refit on train + val; test spends the test split")
        parser.add_argument("--images", type=int, default=None, help="at most this many images of the split")

    def handle(self, *args, version, split, images, **options):
        try:
            model, _ = model_resolve(version)
            report = services.model_version_calibrate(version=model, split=split, images=images)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(self.style.SUCCESS(
            f"{model.name}: temperature {report['temperature']:.3f} on {report['images']} {split} images; "
            f"ECE {report['ece_before']:.3f} → {report['ece_after']:.3f}, NLL {report['nll_before']:.3f} → "
            f"{report['nll_after']:.3f}"))
