"""The dataset pages' forms (freeze a version, import a zip). They check input; the services decide and act."""
from __future__ import annotations

from django import forms
from django.conf import settings

from apps.characters.models import DatasetVersion, ImportJob


def suggested_version_name() -> str:
    """The first free ``v<n>`` after the versions that exist."""
    n = DatasetVersion.objects.count() + 1
    while DatasetVersion.objects.filter(name=f"v{n}").exists():
        n += 1
    return f"v{n}"


class FreezePreviewForm(forms.Form):
    """What a freeze splits by: enough to preview it."""

    val = forms.FloatField(label="Validation share", min_value=0, max_value=0.95, initial=0.15,
                           widget=forms.NumberInput(attrs={"step": "0.01"}))
    test = forms.FloatField(label="Test share", min_value=0, max_value=0.95, initial=0.15,
                            widget=forms.NumberInput(attrs={"step": "0.01"}))
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**31 - 1, help_text="Same seed, same split.")
    min_images = forms.IntegerField(label="Min images per character", min_value=1, max_value=100_000, initial=6,
                                    help_text="Characters with fewer approved images are left out.")


class FreezeForm(FreezePreviewForm):
    name = forms.CharField(max_length=120, help_text="Unique; training jobs and evaluations name it.")
    notes = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    field_order = ["name", "val", "test", "seed", "min_images", "notes"]


class ImportForm(forms.Form):
    archive = forms.FileField(label="Zip of <series>_<character>/ folders",
                              widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}))
    image_status = forms.ChoiceField(label="New images are", choices=ImportJob.ImageStatus.choices,
                                     initial=ImportJob.ImageStatus.APPROVED)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        limit = settings.KYARA_IMPORT_MAX_BYTES
        self.fields["archive"].help_text = (f"Each folder is one character: genshin_impact_Hu Tao/*.png. At most "
                                            f"{limit / 2**20:,.0f} MB; bigger: manage.py import_images.")
        self.fields["archive"].widget.attrs["data-max-bytes"] = str(limit)
