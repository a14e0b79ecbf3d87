"""The training page's start form: a field per ``TrainConfig`` setting, checked by ``TrainConfig`` itself, so the
form never disagrees with the API or ``manage.py train`` about what a run may be; each of its refusals is shown
next to the setting it is about."""
from __future__ import annotations

import dataclasses

from django import forms

from apps.characters.models import DatasetVersion
from apps.ml.architectures import architectures
from apps.ml.config import MONITORS, OPTIMIZERS, SCHEDULERS, ConfigError, TrainConfig
from apps.ml.device import PRECISION_CHOICES
from apps.ml.recipes import RECIPE_CHOICES, RECIPE_KEYS, RECIPES

# Shown first; the rest of TrainConfig goes under "advanced".
BASIC = ("architecture", "weights", "recipe", "epochs", "image_size")
CHOICES = {"recipe": RECIPE_CHOICES, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "monitor": MONITORS,
           "precision": PRECISION_CHOICES, "channels_last": ("auto", "on", "off")}
HELP = {
    "weights": "auto: ImageNet weights where the server has them, else none; none; imagenet; or a .pth path on the server.",
    "recipe": "auto: finetune from pretrained weights, scratch from random ones.",
    "epochs": "Early stopping may end it sooner.",
    "image_size": "Pixels per side; 0: the architecture's own.",
    "device": "auto, cpu, cuda, cuda:1, mps.",
    "workers": "Data loader processes.",
    "threads": "Torch threads; 0: torch's default.",
}
SKIPPED = ("extra",)


def _setting_field(field: dataclasses.Field) -> forms.Field:
    """A form field for one TrainConfig setting. A recipe's setting may stay blank: the recipe decides it."""
    name = field.name
    from_recipe = name in RECIPE_KEYS
    default = RECIPES["finetune"][name] if from_recipe else field.default
    recipe_help = (f"Blank: the recipe's (finetune {RECIPES['finetune'][name]}, scratch {RECIPES['scratch'][name]})."
                   if from_recipe else "")
    options = {"required": not from_recipe, "label": name.replace("_", " ").capitalize(),
               "help_text": " ".join(filter(None, (HELP.get(name, ""), recipe_help))),
               "initial": None if from_recipe else default}
    if name == "architecture":
        return forms.ChoiceField(choices=[(n, n) for n in architectures.names()], **options)
    if isinstance(default, bool):
        return forms.TypedChoiceField(choices=[("", "from the recipe"), ("true", "yes"), ("false", "no")],
                                      coerce=lambda value: value == "true", empty_value=None, **options)
    if name in CHOICES:
        choices = [(c, c) for c in CHOICES[name]]
        return forms.ChoiceField(choices=[("", "from the recipe"), *choices] if from_recipe else choices, **options)
    if isinstance(default, int):
        return forms.IntegerField(**options)
    if isinstance(default, float):
        return forms.FloatField(widget=forms.NumberInput(attrs={"step": "any"}), **options)
    return forms.CharField(max_length=500, **options)


SETTINGS = [f for f in dataclasses.fields(TrainConfig) if f.name not in SKIPPED]


class TrainingStartForm(forms.Form):
    dataset_version = forms.ModelChoiceField(queryset=DatasetVersion.objects.order_by("-created_at", "-id"),
                                             empty_label=None)
    name = forms.CharField(max_length=120, required=False, help_text="Blank: <version> <architecture> #<id>.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in SETTINGS:
            self.fields[field.name] = _setting_field(field)
        self.config: dict = {}

    def basic_fields(self) -> list:
        return [self[name] for name in ("dataset_version", "name", *BASIC)]

    def advanced_fields(self) -> list:
        return [self[f.name] for f in SETTINGS if f.name not in BASIC]

    def advanced_has_errors(self) -> bool:
        return any(field.errors for field in self.advanced_fields())

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        config = {f.name: data[f.name] for f in SETTINGS if data.get(f.name) not in (None, "")}
        try:
            TrainConfig.from_dict(config)
        except ConfigError as exc:
            for name, problems in exc.by_field.items():
                for problem in problems:
                    self.add_error(name if name in self.fields else None, problem)
        else:
            self.config = config
        return data
