from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Kyara core"

    def ready(self) -> None:
        from .jobs import ensure_lost_sweep_schedule

        # The lost-job sweep is a django-q schedule, in place after every migrate (and test database flush).
        post_migrate.connect(ensure_lost_sweep_schedule, sender=self, dispatch_uid="core.lost_sweep_schedule")
