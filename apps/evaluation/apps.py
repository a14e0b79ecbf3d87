from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "apps.evaluation"
    label = "evaluation"

    def ready(self) -> None:
        # Training sits below evaluation: it announces a success with a signal and never imports us.
        from apps.training.signals import training_job_succeeded

        from .receivers import evaluate_after_training

        training_job_succeeded.connect(evaluate_after_training, dispatch_uid="evaluation.evaluate_after_training")
