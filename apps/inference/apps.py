from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects the receivers
