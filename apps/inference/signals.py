"""Drop cached alias resolutions the moment the registry changes (now and again after commit, so a
request racing the transaction cannot re-cache the old answer for long)."""
from __future__ import annotations

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import ModelAlias, ModelVersion
from .selectors import alias_key


def _forget(names: list[str]) -> None:
    keys = [alias_key(name) for name in names]
    if keys:
        cache.delete_many(keys)
        transaction.on_commit(lambda: cache.delete_many(keys))


@receiver([post_save, post_delete], sender=ModelAlias)
def alias_changed(sender, instance: ModelAlias, **kwargs) -> None:
    _forget([instance.name])


@receiver(post_save, sender=ModelVersion)
def version_changed(sender, instance: ModelVersion, created: bool, **kwargs) -> None:
    if not created:
        _forget(list(ModelAlias.objects.filter(version=instance).values_list("name", flat=True)))
