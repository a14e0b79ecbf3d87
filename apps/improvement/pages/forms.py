"""The start form of a cycle: the options of ``POST /api/v1/cycles/`` and ``manage.py improve``, as fields; the
service checks them (a refusal is shown next to the field it is about)."""
from __future__ import annotations

from django import forms

from apps.crawling.sources import build_source, sources
from apps.evaluation.models import EvaluationRun

# A service refusal's code → the field it is about.
REFUSAL_FIELDS = {"unknown_character": "characters", "not_in_plan": "characters", "unknown_source": "sources",
                  "nothing_to_collect": "characters", "not_evaluated": "from_evaluation",
                  "invalid_config": "epochs", "invalid_margin": "margin",
                  "invalid_probability": "auto_approve_min_confidence"}


def labelled_sources() -> list[str]:
    """The sources a plan can crawl for a character (their images come with a label)."""
    names = []
    for name in sources.names():
        adapter = build_source(name)
        if adapter.labelled:
            names.append(name)
        adapter.close()
    return names


class EvaluationChoice(forms.ModelChoiceField):
    def label_from_instance(self, run: EvaluationRun) -> str:
        top1 = f"{run.top1:.1%}" if run.top1 is not None else "—"
        return f"#{run.pk}: {run.model_version.name} on {run.dataset_version.name}/{run.split} (top-1 {top1})"


class CycleStartForm(forms.Form):
    from_evaluation = EvaluationChoice(
        queryset=EvaluationRun.objects.filter(status=EvaluationRun.Status.SUCCEEDED)
        .select_related("model_version", "dataset_version").order_by("-created_at", "-id"),
        label="Evaluation", help_text="Its weak characters (by tier) are what the cycle collects for.")
    characters = forms.CharField(required=False, max_length=2000, label="Characters",
                                 help_text="Slugs separated by spaces or commas; blank: every character of the plan.")
    sources = forms.MultipleChoiceField(required=False, choices=(), widget=forms.SelectMultiple(attrs={"size": 4}),
                                        help_text="Blank: the plan's default sources.")
    auto_approve_min_confidence = forms.FloatField(
        required=False, min_value=0, max_value=1, label="Auto-approve at",
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": "off"}),
        help_text="Approve crawled images whose label the model confirms at least this sure (0-1); blank: a "
                  "person reviews every one.")
    epochs = forms.IntegerField(required=False, min_value=1, help_text="Blank: as default's training job.")
    image_size = forms.IntegerField(required=False, min_value=16, max_value=1024,
                                    help_text="Blank: as default's training job.")
    margin = forms.FloatField(required=False, min_value=-1, max_value=1,
                              widget=forms.NumberInput(attrs={"step": "any"}),
                              help_text="Top-1 gain over default needed on every compared test split; blank: the "
                                        "server's setting.")
    promote_if_better = forms.BooleanField(required=False, label="Promote to default if better")
    skip_waiting = forms.BooleanField(required=False, label="Do not wait for the review of pending images")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sources"].choices = [(name, name) for name in labelled_sources()]

    def clean_characters(self) -> list[str]:
        return [slug for slug in self.cleaned_data["characters"].replace(",", " ").split() if slug]

    def options(self) -> dict:
        """The service's keyword arguments."""
        return dict(self.cleaned_data)
