"""The evaluation pages' form: evaluate this model on this dataset version's split. The service checks the rest."""
from __future__ import annotations

from django import forms

from apps.characters.models import DatasetItem, DatasetVersion
from apps.inference.models import ModelVersion


class EvaluationStartForm(forms.Form):
    model_version = forms.ModelChoiceField(queryset=ModelVersion.objects.order_by("-created_at", "-id"),
                                           empty_label=None, label="Model")
    dataset_version = forms.ModelChoiceField(queryset=DatasetVersion.objects.order_by("-created_at", "-id"),
                                             empty_label=None, label="Dataset version")
    split = forms.ChoiceField(choices=DatasetItem.Split.choices, initial=DatasetItem.Split.TEST,
                              help_text="test: the honest number; val was used to pick the epoch.")
