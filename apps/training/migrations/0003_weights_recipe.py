from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("training", "0002_lost_job_watchdog"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingjob",
            name="weights_used",
            field=models.CharField(blank=True, help_text="The starting weights the run actually used: imagenet, none or a file", max_length=500),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="weights_reason",
            field=models.CharField(blank=True, help_text="Why those weights (weights: auto)", max_length=500),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="recipe",
            field=models.CharField(blank=True, help_text="The recipe its defaults came from", max_length=20),
        ),
    ]
