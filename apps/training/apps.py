from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "apps.training"
    label = "training"

    def ready(self) -> None:
        # Architectures from pip-installed plugins (entry point group ``kyara.architectures``); a broken
        # one is logged and recorded by apps.core.plugins, never fatal.
        from apps.ml.architectures import discover_plugins

        discover_plugins()
