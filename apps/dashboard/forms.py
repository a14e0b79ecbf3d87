"""Forms of the pages' staff actions. They check input; the services decide and act."""
from __future__ import annotations

from django import forms

from apps.characters.models import Character
from apps.crawling.services import MAX_QUOTA
from apps.crawling.sources import sources
from apps.inference.models import ModelVersion


class CrawlStartForm(forms.Form):
    source = forms.ChoiceField()
    character = forms.ModelChoiceField(
        queryset=Character.objects.select_related("series").filter(active=True), required=False,
        empty_label="— unlabelled pool —", help_text="Empty: the images go to the unlabelled pool.",
    )
    query = forms.CharField(max_length=500, required=False,
                            help_text="Empty: the character's tags for the source.")
    quota = forms.IntegerField(min_value=1, max_value=MAX_QUOTA, initial=50, help_text="New images to collect.")
    approve = forms.BooleanField(required=False, help_text="Accepted images are approved, not pending.")
    max_pages = forms.IntegerField(min_value=1, max_value=10_000, required=False,
                                   help_text="Empty: the platform's default.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = [(name, name) for name in sources.names()]


class AliasSetForm(forms.Form):
    alias = forms.SlugField(max_length=60, initial="default")
    version = forms.ModelChoiceField(queryset=ModelVersion.objects.order_by("-created_at", "-id"),
                                     to_field_name="name", empty_label=None)
    why = forms.CharField(max_length=500, required=False)
    force = forms.BooleanField(required=False, help_text="Override the promotion gate.")


class AliasRollbackForm(forms.Form):
    why = forms.CharField(max_length=500, required=False)
