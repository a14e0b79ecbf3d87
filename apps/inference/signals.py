"""Drop cached alias resolutions the moment the registry changes: a new generation of keys now and again after
the commit, so an answer a request read before the commit and cached after it is never read again."""
from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import ModelAlias, ModelVersion
from .selectors import alias_generation_bump


def _forget(names: list[str]) -> None:
    if names:
        alias_generation_bump()
        transaction.on_commit(alias_generation_bump)


@receiver([post_save, post_delete], sender=ModelAlias)
def alias_changed(sender, instance: ModelAlias, **kwargs) -> None:
    _forget([instance.name])


@receiver(post_save, sender=ModelVersion)
def version_changed(sender, instance: ModelVersion, created: bool, **kwargs) -> None:
    if not created:
        _forget(list(ModelAlias.objects.filter(version=instance).values_list("name", flat=True)))
