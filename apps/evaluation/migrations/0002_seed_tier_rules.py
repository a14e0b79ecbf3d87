"""The original report's collection plan as editable rows: 0% → P1 +100, below 60% → P2 +80, 60-80% → P3 +60."""
from django.db import migrations

RULES = (
    {"priority": 1, "name": "P1: never recognised", "max_accuracy": 0.0, "inclusive": True, "images": 100},
    {"priority": 2, "name": "P2: below 60%", "max_accuracy": 0.6, "inclusive": False, "images": 80},
    {"priority": 3, "name": "P3: 60-80%", "max_accuracy": 0.8, "inclusive": False, "images": 60},
)


def seed(apps, schema_editor):
    TierRule = apps.get_model("evaluation", "TierRule")
    for rule in RULES:
        TierRule.objects.get_or_create(priority=rule["priority"], defaults=rule)


class Migration(migrations.Migration):
    dependencies = [("evaluation", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
