import json

from django.core.management.base import BaseCommand

from apps.characters.selectors import dataset_stats


class Command(BaseCommand):
    help = "Counts per series and character, by status and by split of the latest dataset version."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        stats = dataset_stats()
        if options["json"]:
            self.stdout.write(json.dumps(stats, ensure_ascii=False))
            return
        self.stdout.write(f"{stats['images']} images, {stats['characters']} characters; "
                          f"latest version: {stats['latest_version'] or 'none'}")
        header = f"{'character':40} {'approved':>8} {'pending':>8} {'rejected':>8} {'train':>6} {'val':>5} {'test':>5}"
        for series in stats["series"]:
            self.stdout.write(f"\n{series['series']} ({series['name']})")
            self.stdout.write(header)
            for c in series["characters"]:
                st, sp = c["status"], c["split"]
                self.stdout.write(
                    f"{c['name'][:40]:40} {st.get('approved', 0):>8} {st.get('pending', 0):>8} "
                    f"{st.get('rejected', 0):>8} {sp.get('train', 0):>6} {sp.get('val', 0):>5} {sp.get('test', 0):>5}"
                )
        if stats["unlabelled"]:
            self.stdout.write(f"\nunlabelled: {stats['unlabelled']}")
