from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"

    def ready(self) -> None:
        from . import services, signals  # noqa: F401 - signals connects the receivers
        from .loading import predictor_cache

        # The cache calls back into the services; it never imports them (they import it).
        predictor_cache.connect(choose_runtime=services.model_version_runtime_choose,
                                record_availability=services.model_availability_record)
