from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ImprovementConfig(AppConfig):
    name = "apps.improvement"
    label = "improvement"
    verbose_name = "Improvement cycles"

    def ready(self) -> None:
        from django_q.signals import post_execute

        from .receivers import advance_after_child_task
        from .services import ensure_cycle_schedules

        # A child's task ended (in either cluster): its cycle goes on now, not at the next scheduled advance.
        post_execute.connect(advance_after_child_task, dispatch_uid="improvement.advance_after_child_task")
        # The advance (and, when switched on, the weekly) schedule, in place after every migrate.
        post_migrate.connect(ensure_cycle_schedules, sender=self, dispatch_uid="improvement.cycle_schedules")
