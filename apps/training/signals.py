"""Signals the training app sends; higher apps (evaluation) connect to them, training never imports them."""
from django.dispatch import Signal

# Sent with sender=TrainingJob, job=<TrainingJob>, model_version=<ModelVersion> once a job succeeded
# and its model version is registered (after the transaction commits).
training_job_succeeded = Signal()
