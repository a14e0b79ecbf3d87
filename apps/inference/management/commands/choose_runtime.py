import json

from django.core.management.base import BaseCommand, CommandError

from apps.core.api import ServiceError
from apps.inference import services
from apps.inference.selectors import model_resolve


def candidates_table(record: dict) -> list[str]:
    """The candidates of one runtime record as aligned text lines (the command and bench/api.py print it)."""
    def num(value, fmt):
        return "—" if value is None else format(value, fmt)

    lines = [f"{'runtime':<17} {'prec':<5} {'status':<8} {'b1 ms':>7} {'b10 ms':>8} {'agree':>8} {'Δacc pt':>8}  why"]
    for row in record["candidates"]:
        lines.append(f"{row['name']:<17} {row['precision']:<5} {row.get('status', ''):<8} "
                     f"{num(row.get('ms_b1'), '7.2f')} {num(row.get('ms_b10'), '8.2f')} "
                     f"{num(row.get('agreement'), '8.2%')} {num(row.get('accuracy_delta_points'), '+8.2f')}  "
                     f"{row.get('reason', '')}")
    return lines


class Command(BaseCommand):
    help = ("Which runtime serves a model version on this kind of machine: the recorded choice, or judged on the "
            "version's validation images and timed now (--again to measure even when recorded).")

    def add_arguments(self, parser):
        parser.add_argument("model", help="an alias or a model version name")
        parser.add_argument("--again", action="store_true", help="measure even when this machine has a record")
        parser.add_argument("--guard-split", choices=("val", "test"),
                            help="judge the runtimes on this split of the version's dataset (test for a model refit "
                                 "on train + val, which has seen val); a record judged on another split is measured "
                                 "again. Default: the record as it is, val when measuring")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the record as JSON")

    def handle(self, *args, model, again, guard_split, as_json, **options):
        try:
            version, _alias = model_resolve(model, fresh=True)
            record = services.model_version_runtime_choose(version, where="command", again=again,
                                                           guard_split=guard_split)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        if as_json:
            self.stdout.write(json.dumps(record, indent=2))
            return
        machine = record["machine"]
        self.stdout.write(f"{version.name} on {machine['cpu']} ({machine['cores']} cores"
                          f"{', ' + ', '.join(machine['gpus']) if machine['gpus'] else ''}), measured "
                          f"{record.get('where', '')} {record['measured_at']} on {record['validation_images']} "
                          f"{record.get('guard_split', 'val')} images")
        for line in candidates_table(record):
            self.stdout.write("  " + line)
        self.stdout.write(self.style.SUCCESS(f"chosen: {record['why']}"))
