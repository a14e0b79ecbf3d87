from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "apps.review"
    label = "review"
    verbose_name = "Review with the model's help"

    def ready(self) -> None:
        # Inference sits below review: an alias move is announced by its AliasChange row, never by a call.
        from django.db.models.signals import post_save

        from apps.inference.models import AliasChange

        from .receivers import recompute_after_default_moves

        post_save.connect(recompute_after_default_moves, sender=AliasChange,
                          dispatch_uid="review.recompute_after_default_moves")
