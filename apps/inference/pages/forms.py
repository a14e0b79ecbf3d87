"""The models page's forms. They check input; the services decide and act."""
from __future__ import annotations

from django import forms

from apps.inference.models import ModelVersion


class AliasSetForm(forms.Form):
    alias = forms.SlugField(max_length=60, initial="default")
    version = forms.ModelChoiceField(queryset=ModelVersion.objects.order_by("-created_at", "-id"),
                                     to_field_name="name", empty_label=None)
    why = forms.CharField(max_length=500, required=False)
    force = forms.BooleanField(required=False, help_text="Override the promotion gate.")


class AliasRollbackForm(forms.Form):
    why = forms.CharField(max_length=500, required=False)
