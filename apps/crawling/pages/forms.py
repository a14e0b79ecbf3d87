"""The crawl pages' forms. They check input; the services decide and act."""
from __future__ import annotations

from django import forms

from apps.characters.models import Character
from apps.crawling.services import MAX_QUOTA
from apps.crawling.sources import sources


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
    solo = forms.NullBooleanField(
        required=False, label="Single-character posts",
        widget=forms.Select(choices=[("unknown", "the source's default"), ("true", "only solo posts"),
                                     ("false", "any post")]),
        help_text="The model is single-label: group pictures teach it little.")
    auto_approve_min_confidence = forms.FloatField(
        required=False, min_value=0.01, max_value=1.0, label="Auto-approve at confidence",
        help_text="Empty: a person reviews every image. Else images the current model confirms at or above "
                  "this probability are approved as they arrive.")
    max_pages = forms.IntegerField(min_value=1, max_value=10_000, required=False,
                                   help_text="Empty: the platform's default.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = [(name, name) for name in sources.names()]
