"""Every state change of the characters app. Views, API, admin, tasks and commands call these."""
from .curation import (  # noqa: F401
    REJECT_REASONS,
    character_get_or_create,
    image_approve,
    image_reject,
    image_relabel,
    image_set_status,
    series_get_or_create,
)
from .imports import ImportSummary, images_import, split_folder_names  # noqa: F401
from .ingest import IngestResult, awaits_review, image_ingest, media_path, suggestions_request  # noqa: F401
from .media import MediaReport, media_check  # noqa: F401
from .versions import LeakError, dataset_version_export, dataset_version_freeze  # noqa: F401
