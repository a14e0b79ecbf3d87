"""The pages' forms through Django's test client, acting through the real services: freeze a dataset version (with
its preview), import a zip, start a training run, evaluate a model and promote it. A bad form is a 400 with each
problem shown next to its field and nothing changed; every action is staff-only."""
from __future__ import annotations

import io
import zipfile
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.conftest import make_image_bytes, queued_tasks
from tests.evaluation.conftest import (  # _fast_serving: autouse here too (eager PyTorch, no alias watcher)
    _fast_serving,  # noqa: F401
    make_characters,
    make_version,
    register_rigged,
    store_image,
)
from tests.training.conftest import FAST, launcher_env, make_dataset_version  # noqa: F401 - launcher_env reused

pytestmark = pytest.mark.django_db


class _Fields(HTMLParser):
    """Each form field container (``div.field``) of a page: the ids inside it and the errors it shows."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict] = []
        self.current: dict | None = None
        self.depth = 0
        self.in_errors = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div" and self.current is None and "field" in classes:
            self.current, self.depth = {"ids": set(), "errors": []}, 1
            return
        if self.current is None:
            return
        self.depth += tag == "div"
        if attrs.get("id"):
            self.current["ids"].add(attrs["id"])
        if tag == "ul" and "errorlist" in classes:
            self.in_errors = True

    def handle_endtag(self, tag):
        if self.current is None:
            return
        if tag == "ul":
            self.in_errors = False
        if tag == "div":
            self.depth -= 1
            if self.depth == 0:
                self.fields.append(self.current)
                self.current = None

    def handle_data(self, data):
        if self.current is not None and self.in_errors and data.strip():
            self.current["errors"].append(data.strip())


def errors_next_to(response, field: str) -> str:
    """The errors shown in the container of the form field ``field`` (its input has id ``id_<field>``)."""
    parser = _Fields()
    parser.feed(response.content.decode())
    found = [f for f in parser.fields if f"id_{field}" in f["ids"]]
    assert len(found) == 1, f"no single field container holds #id_{field}"
    return " ".join(found[0]["errors"])


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def pictures(folders: dict[str, int], *, seed: int = 0) -> dict[str, bytes]:
    """``{"<series>_<character>": n}`` → n distinct 64 px pictures per folder."""
    entries = {}
    for index, (folder, n) in enumerate(folders.items()):
        for i in range(n):
            entries[f"{folder}/{i}.png"] = make_image_bytes(seed + 100 * index + i, size=(64, 64))
    return entries


@pytest.fixture
def viewer_client(viewer):
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def imports_dir(settings, tmp_path):
    settings.KYARA_IMPORTS_DIR = tmp_path / "imports"
    return settings.KYARA_IMPORTS_DIR


@pytest.fixture
def approved(cast):
    """The cast with eight approved pictures each (two from ``cast``, six more)."""
    from apps.characters.models import Image
    from apps.characters.services import image_ingest

    for index, character in enumerate(cast.values()):
        for seed in range(6):
            image_ingest(data=make_image_bytes(3000 + index * 50 + seed, size=(96, 96)), status=Image.Status.APPROVED,
                         source_kind=Image.SourceKind.UPLOAD, character=character)
    return cast


# --- Freeze ------------------------------------------------------------------------------------------

def test_a_bad_freeze_form_is_a_400_with_each_problem_next_to_its_field(staff_client, approved):
    from apps.characters.models import DatasetVersion

    response = staff_client.post(reverse("characters:freeze"), {"name": "", "val": "a lot", "test": "0.2",
                                                               "seed": "-1", "min_images": "0"})
    assert response.status_code == 400
    assert "required" in errors_next_to(response, "name")
    assert "Enter a number" in errors_next_to(response, "val")
    assert "greater than or equal to 0" in errors_next_to(response, "seed")
    assert "greater than or equal to 1" in errors_next_to(response, "min_images")
    assert errors_next_to(response, "test") == ""
    # The service's refusals land next to the field they are about.
    response = staff_client.post(reverse("characters:freeze"), {"name": "v1", "val": "0.5", "test": "0.5",
                                                               "seed": "0", "min_images": "6"})
    assert response.status_code == 400 and "val + test < 1" in errors_next_to(response, "test")
    response = staff_client.post(reverse("characters:freeze"), {"name": "v1", "val": "0.2", "test": "0.2",
                                                               "seed": "0", "min_images": "50"})
    assert response.status_code == 400 and "No active character has 50" in errors_next_to(response, "min_images")
    assert not DatasetVersion.objects.exists()


def test_freeze_makes_a_version_and_the_dataset_page_shows_it_with_its_leak_report(staff_client, staff_user, approved):
    from apps.characters.models import DatasetVersion

    page = staff_client.get(reverse("dashboard:dataset"))
    assert page.status_code == 200 and 'id="freeze-form"' in page.content.decode()
    assert 'value="v1"' in page.content.decode()  # the suggested name
    response = staff_client.post(reverse("characters:freeze"), {"name": "v1", "val": "0.25", "test": "0.25",
                                                               "seed": "3", "min_images": "6"}, follow=True)
    version = DatasetVersion.objects.get()
    assert response.redirect_chain[-1][0].startswith(reverse("dashboard:dataset"))
    assert (version.name, version.created_by, version.params["seed"], version.num_images) == ("v1", staff_user, 3, 24)
    body = response.content.decode()
    assert 'id="latest-version"' in body and 'data-version="v1"' in body and 'data-leaks="0"' in body
    assert "The first version: every image is new." in body and "Froze dataset version v1" in body
    # The same name again: refused next to the name, nothing frozen.
    again = staff_client.post(reverse("characters:freeze"), {"name": "v1", "val": "0.25", "test": "0.25", "seed": "3",
                                                            "min_images": "6"})
    assert again.status_code == 400 and "already exists" in errors_next_to(again, "name")
    assert DatasetVersion.objects.count() == 1


def test_the_preview_shows_the_leak_report_and_what_changed_since_the_latest_version(staff_client, approved):
    from apps.characters.models import Image
    from apps.characters.services import dataset_version_freeze, image_ingest, image_reject

    dataset_version_freeze(name="v1", val=0.25, test=0.25, min_images=6)
    hu_tao, ganyu = approved["genshin_hu_tao"], approved["genshin_ganyu"]
    for seed in range(3):
        image_ingest(data=make_image_bytes(7000 + seed, size=(96, 96)), status=Image.Status.APPROVED,
                     source_kind=Image.SourceKind.UPLOAD, character=hu_tao)
    image_reject(image_ids=[Image.objects.filter(character=ganyu).first().pk], reason="wrong_character")
    preview = staff_client.get(reverse("characters:freeze_preview"),
                               {"val": "0.25", "test": "0.25", "seed": "0", "min_images": "6"})
    assert preview.status_code == 200
    body = preview.content.decode()
    assert 'data-leaks="0"' in body and "no leak" in body
    assert "Since <strong>v1</strong>" in body and "+3</span> added" in body and "−1</span> removed" in body
    assert '<tr data-character="genshin_hu_tao"><td>Hu Tao</td><td class="num">8</td><td class="num">11</td>' in body
    assert '<tr data-character="genshin_ganyu"><td>Ganyu</td><td class="num">8</td><td class="num">7</td>' in body
    assert "bocchi_hitori_gotoh" not in body  # unchanged characters are left out
    # With a threshold above Ganyu's seven images it would be left out: said before anything is frozen.
    preview = staff_client.get(reverse("characters:freeze_preview"),
                               {"val": "0.25", "test": "0.25", "seed": "0", "min_images": "8"})
    assert "1 character left out" in preview.content.decode()
    assert "7 approved images, fewer than 8" in preview.content.decode()
    bad = staff_client.get(reverse("characters:freeze_preview"), {"val": "x", "test": "0.2", "seed": "0",
                                                                   "min_images": "6"})
    assert bad.status_code == 400 and "Enter a number" in bad.content.decode()


# --- Import a zip ------------------------------------------------------------------------------------

def test_a_small_zip_is_imported_within_the_request(staff_client, staff_user, imports_dir):
    from apps.characters.models import Character, Image, ImportJob

    archive = zip_bytes({**pictures({"genshin_impact_Hu Tao": 3, "genshin_impact_Ganyu": 2}),
                         "genshin_impact_Ganyu/notes.txt": b"not a picture"})
    response = staff_client.post(reverse("characters:imports"), {
        "archive": SimpleUploadedFile("anime.zip", archive, content_type="application/zip"),
        "image_status": "approved"}, follow=True)
    job = ImportJob.objects.get()
    assert response.redirect_chain == [(reverse("characters:import_detail", args=[job.pk]), 302)]
    assert (job.status, job.files, job.created_by, job.original_name) == ("succeeded", 6, staff_user, "anime.zip")
    assert job.summary["new"] == 5 and job.summary["skipped_files"] == 1 and job.summary["characters_created"] == 2
    assert sorted(Character.objects.values_list("series__slug", "name")) == [("genshin_impact", "Ganyu"),
                                                                              ("genshin_impact", "Hu Tao")]
    assert Image.objects.filter(status="approved").count() == 5
    assert list(imports_dir.iterdir()) == []  # the kept zip goes once imported
    body = response.content.decode()
    assert '<div class="value" id="import-new">5</div>' in body and 'id="next-freeze"' in body
    # The same zip again adds nothing.
    staff_client.post(reverse("characters:imports"), {"archive": SimpleUploadedFile("anime.zip", archive),
                                                      "image_status": "pending"})
    assert ImportJob.objects.first().summary["exact_duplicates"] == 5 and Image.objects.count() == 5


@pytest.mark.parametrize("name, data, expected", [
    ("garbage.zip", b"PK\x03\x04 this is not really a zip" * 20, "is not a readable zip file"),
    ("cut.zip", zip_bytes(pictures({"a_b": 2}))[:-30], "is not a readable zip file"),
    ("climb.zip", zip_bytes({**pictures({"a_b": 1}), "../evil/x.png": make_image_bytes(1, size=(64, 64))}),
     "point outside the archive's folder (../evil/x.png)"),
    ("root.zip", zip_bytes({"/etc/a_b/x.png": make_image_bytes(2, size=(64, 64))}), "point outside"),
    ("flat.zip", zip_bytes({"x.png": make_image_bytes(3, size=(64, 64))}), "holds no file in the"),
])
def test_a_zip_that_cannot_be_imported_is_refused_whole_next_to_the_file_field(staff_client, imports_dir, name, data,
                                                                               expected):
    from apps.characters.models import Character, Image, ImportJob

    response = staff_client.post(reverse("characters:imports"), {"archive": SimpleUploadedFile(name, data),
                                                                 "image_status": "approved"})
    assert response.status_code == 400
    assert expected in errors_next_to(response, "archive") and "nothing was imported" in errors_next_to(response,
                                                                                                         "archive")
    assert not ImportJob.objects.exists() and not Image.objects.exists() and not Character.objects.exists()
    assert list(imports_dir.iterdir()) == []  # nothing kept on disk either


def test_a_damaged_picture_inside_a_readable_zip_is_counted_and_the_rest_imported(staff_client, imports_dir):
    from apps.characters.models import Image, ImportJob

    entries = pictures({"series_one": 3})
    archive = bytearray(zip_bytes(entries))
    start = archive.find(entries["series_one/1.png"])
    archive[start + 200] ^= 0xFF  # stored uncompressed: one flipped byte, a bad CRC
    staff_client.post(reverse("characters:imports"), {"archive": SimpleUploadedFile("d.zip", bytes(archive)),
                                                      "image_status": "pending"})
    job = ImportJob.objects.get()
    assert job.status == "succeeded" and job.summary["refused"] == {"corrupt_entry": 1} and job.summary["new"] == 2
    assert sorted(Image.objects.values_list("original_name", "status")) == [("series_one/0.png", "pending"),
                                                                            ("series_one/2.png", "pending")]


@pytest.mark.backend
def test_a_big_zip_is_imported_by_the_worker_task(staff_client, imports_dir, settings,
                                                  django_capture_on_commit_callbacks):
    from apps.characters.models import Image, ImportJob
    from apps.characters.tasks import run_import_job

    settings.KYARA_IMPORT_INLINE_MAX_BYTES = 1000
    queued_tasks()  # start from an empty queue
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("characters:imports"), {
            "archive": SimpleUploadedFile("big.zip", zip_bytes(pictures({"s_c": 2}))), "image_status": "approved"},
            follow=True)
    job = ImportJob.objects.get()
    assert job.status == "queued" and not Image.objects.exists() and len(list(imports_dir.iterdir())) == 1
    assert "is queued: a worker imports its 2 files" in response.content.decode()
    assert '<meta http-equiv="refresh"' in response.content.decode()  # the page follows the job
    (task,) = queued_tasks()
    assert task["func"] == "apps.characters.tasks.run_import_job" and task["args"] == (job.pk,)
    assert run_import_job(job.pk)["status"] == "succeeded"
    assert Image.objects.count() == 2 and list(imports_dir.iterdir()) == []
    assert run_import_job(job.pk) == {"import": job.pk, "ran": False}  # a duplicate task changes nothing


def test_a_running_import_stops_when_cancelled_keeps_what_it_imported_and_a_retry_adds_the_rest(
        transactional_db, staff_client, imports_dir, settings):
    """Cancel from the import's page while a worker imports: it stops after the file it is on (each file before it
    whole, counted in the summary), the zip stays, and Retry imports the rest once."""
    import threading
    import time

    from apps.characters.models import Image, ImportJob
    from apps.characters.services.import_jobs import import_job_run

    settings.KYARA_IMPORT_INLINE_MAX_BYTES = 1000  # queued for a worker (run here on a thread of its own)
    settings.KYARA_JOB_POLL_SECONDS = 0.02
    files = 150
    staff_client.post(reverse("characters:imports"), {
        "archive": SimpleUploadedFile("many.zip", zip_bytes(pictures({"s_c": files}))), "image_status": "approved"})
    job = ImportJob.objects.get()
    worker = threading.Thread(target=import_job_run, kwargs={"job_id": job.pk})
    worker.start()
    deadline = time.monotonic() + 60
    while Image.objects.count() < 5 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    page = staff_client.post(reverse("characters:import_cancel", args=[job.pk]), follow=True).content.decode()
    assert "cancel requested" in page
    worker.join(timeout=120)
    job.refresh_from_db()
    imported = Image.objects.count()
    assert (job.status, job.stop_reason, job.summary["stopped"]) == ("cancelled", "cancelled", True)
    assert 5 <= imported < files and job.summary["new"] == imported
    assert len(list(imports_dir.iterdir())) == 1  # the zip is kept for a retry
    page = staff_client.get(reverse("characters:import_detail", args=[job.pk])).content.decode()
    assert 'id="import-stopped"' in page and f'<div class="value" id="import-new">{imported}</div>' in page
    assert 'id="import-retry"' in page and 'id="import-cancel"' not in page

    staff_client.post(reverse("characters:import_retry", args=[job.pk]))
    assert import_job_run(job_id=job.pk).status == "succeeded"
    job.refresh_from_db()
    assert Image.objects.count() == files and job.summary["new"] == files - imported
    assert job.summary["exact_duplicates"] == imported and not job.summary["stopped"]
    assert list(imports_dir.iterdir()) == []
    # A finished import cannot be cancelled: the page says so and nothing changes.
    page = staff_client.post(reverse("characters:import_cancel", args=[job.pk]), follow=True).content.decode()
    assert "only queued or running jobs can be cancelled" in page
    assert ImportJob.objects.get().status == "succeeded"


def test_an_import_cancelled_before_its_first_file_ends_cancelled_with_nothing_imported(
        transactional_db, staff_client, imports_dir, settings):
    """Cancelled while it is still creating the zip's 300 characters: it stops before the first file and ends
    cancelled at progress 0 (no progress was reported yet), nothing imported, the zip kept."""
    import threading
    import time

    from apps.characters.models import Image, ImportJob
    from apps.characters.services.import_jobs import import_job_cancel, import_job_run

    settings.KYARA_IMPORT_INLINE_MAX_BYTES = 1000
    settings.KYARA_JOB_POLL_SECONDS = 0.01
    staff_client.post(reverse("characters:imports"), {
        "archive": SimpleUploadedFile("wide.zip", zip_bytes(pictures({f"s_c{i}": 1 for i in range(300)}))),
        "image_status": "approved"})
    job = ImportJob.objects.get()
    worker = threading.Thread(target=import_job_run, kwargs={"job_id": job.pk})
    worker.start()
    deadline = time.monotonic() + 60
    while ImportJob.objects.get().status != "running" and time.monotonic() < deadline:
        time.sleep(0.005)
    import_job_cancel(job=job)
    worker.join(timeout=120)
    job.refresh_from_db()
    assert (job.status, job.summary["stopped"], job.summary["new"], job.progress) == ("cancelled", True, 0, 0.0)
    assert not Image.objects.exists() and len(list(imports_dir.iterdir())) == 1


def test_a_zip_over_the_limit_is_refused(staff_client, imports_dir, settings):
    from apps.characters.models import ImportJob

    data = zip_bytes({**pictures({"s_c": 2}), "s_c/padding.bin": bytes(range(256)) * 400})  # over 100 KB
    settings.KYARA_IMPORT_MAX_BYTES = len(data) - 1  # over the import's limit, under the request's
    response = staff_client.post(reverse("characters:imports"), {"archive": SimpleUploadedFile("x.zip", data),
                                                                 "image_status": "approved"})
    assert response.status_code == 400 and "the import page takes zips of at most" in errors_next_to(response,
                                                                                                      "archive")
    settings.KYARA_IMPORT_MAX_BYTES = 1000  # the body is over the view's own limit (+ 64 KiB): refused unread
    response = staff_client.post(reverse("characters:imports"), {"archive": SimpleUploadedFile("x.zip", data),
                                                                 "image_status": "approved"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert not ImportJob.objects.exists() and not imports_dir.exists()


# --- Training --------------------------------------------------------------------------------------

def _training_form(version, **values) -> dict:
    from apps.training.pages.forms import TrainingStartForm

    form = TrainingStartForm(initial={"dataset_version": version})
    data = {name: ("" if field.initial is None else field.initial) for name, field in form.fields.items()}
    return {**data, "dataset_version": version.pk, **FAST, "epochs": 1, **values}


def test_a_bad_training_form_shows_every_trainconfig_problem_next_to_its_field(staff_client):
    from apps.training.models import TrainingJob

    dataset_version = make_dataset_version()

    page = staff_client.get(reverse("training:list"))
    assert page.status_code == 200 and 'id="training-start-form"' in page.content.decode()
    response = staff_client.post(reverse("training:start"), _training_form(
        dataset_version, epochs=0, image_size=8, lr=-1, warmup_epochs=5, scale_min=2, weights="/nope/w.pth"))
    assert response.status_code == 400
    assert "epochs must be at least 1, got 0" in errors_next_to(response, "epochs")
    assert "image_size must be between 16 and 1024 pixels" in errors_next_to(response, "image_size")
    assert "lr must be a positive learning rate" in errors_next_to(response, "lr")
    assert "scale_min must be in (0, 1]" in errors_next_to(response, "scale_min")
    assert "'/nope/w.pth' is not a file" in errors_next_to(response, "weights")
    assert errors_next_to(response, "batch_size") == ""
    body = response.content.decode()
    assert '<details id="training-advanced" open>' in body  # an advanced setting is wrong: it is shown open
    response = staff_client.post(reverse("training:start"), _training_form(dataset_version, epochs="many"))
    assert response.status_code == 400 and "Enter a whole number" in errors_next_to(response, "epochs")
    assert '<details id="training-advanced">' in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_a_dataset_version_that_cannot_train_is_refused_next_to_its_field(staff_client):
    from apps.training.models import TrainingJob

    lonely = make_dataset_version("one-class", classes=1)
    response = staff_client.post(reverse("training:start"), _training_form(lonely))
    assert response.status_code == 400 and "a classifier needs at least 2" in errors_next_to(response, "dataset_version")
    assert not TrainingJob.objects.exists()


@pytest.mark.backend
@pytest.mark.slow
@pytest.mark.usefixtures("launcher_env")
def test_the_start_form_trains_a_model_through_the_training_service(staff_client, staff_user,
                                                                    django_capture_on_commit_callbacks):
    """The form's job is the service's: queued on the training queue, then trained for real (1 epoch, 32 px)."""
    from apps.core.queue import TRAINING_QUEUE
    from apps.training.models import TrainingJob
    from apps.training.tasks import launch_training_job

    version = make_dataset_version("v-form", train=6, val=2, test=2)
    queued_tasks(TRAINING_QUEUE), queued_tasks()  # start from empty queues
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("training:start"), _training_form(version, name="from the page"))
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:detail", args=[job.pk])
    assert (job.name, job.created_by, job.dataset_version) == ("from the page", staff_user, version)
    assert {key: job.config[key] for key in (*FAST, "epochs")} == {**FAST, "epochs": 1}
    assert job.config["optimizer"] is None  # left blank: the recipe decides
    (task,) = queued_tasks(TRAINING_QUEUE)  # on the training queue, nothing on the default one
    assert task["args"] == (job.pk,) and queued_tasks() == []
    launch_training_job(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.epochs_run == 1 and job.model_version.input_size == 32


# --- Evaluation and promotion ----------------------------------------------------------------------

@pytest.fixture
def two_models():
    """A dataset version whose test split holds twice as many char-0 pictures as char-1 or char-2, and two rigged
    models: ``zero`` always answers char-0 (top-1 8/16), ``one`` always char-1 (4/16); both 1/3 per class."""
    characters = make_characters(["char-0", "char-1", "char-2"])
    extra = [(store_image(label=0, seed=800 + i, character=characters[0]), characters[0], "test") for i in range(4)]
    version = make_version("v-eval", characters, extra=extra)
    labels = [c.slug for c in characters]
    zero = register_rigged("zero", labels, [3.0, 0.0, 0.0], dataset_version=version)
    one = register_rigged("one", labels, [0.0, 3.0, 0.0], dataset_version=version)
    return version, zero, one


def _evaluate(client, model, version, split="test"):
    """Start an evaluation from the page, then run it (as the worker would) and return it."""
    from apps.evaluation.models import EvaluationRun
    from apps.evaluation.services import evaluation_run_execute

    response = client.post(reverse("evaluation:start"), {"model_version": model.pk, "dataset_version": version.pk,
                                                         "split": split})
    run = EvaluationRun.objects.order_by("-id").first()
    assert response.status_code == 302 and response["Location"] == reverse("evaluation:detail", args=[run.pk])
    return evaluation_run_execute(run_id=run.pk)


def test_a_bad_evaluation_form_is_a_400_next_to_its_field(staff_client, two_models):
    from apps.characters.models import DatasetVersion
    from apps.evaluation.models import EvaluationRun

    version, zero, _ = two_models
    no_val = make_version("v-no-val", make_characters(["char-0", "char-1"]), val=0, seed_base=500)
    response = staff_client.post(reverse("evaluation:start"), {"model_version": zero.pk, "dataset_version": no_val.pk,
                                                               "split": "val"})
    assert response.status_code == 400 and "has no val images" in errors_next_to(response, "split")
    response = staff_client.post(reverse("evaluation:start"), {"model_version": 999, "dataset_version": version.pk,
                                                               "split": "holdout"})
    assert response.status_code == 400
    assert "Select a valid choice" in errors_next_to(response, "model_version")
    assert "Select a valid choice" in errors_next_to(response, "split")
    assert not EvaluationRun.objects.exists() and DatasetVersion.objects.count() == 2


def test_evaluate_then_promote_the_model_that_beats_default(staff_client, staff_user, two_models):
    from apps.inference.models import AliasChange, ModelAlias
    from apps.inference.services import model_alias_set

    version, zero, one = two_models
    model_alias_set(name="default", version=one, why="the first model")
    candidate = _evaluate(staff_client, zero, version)
    assert candidate.status == "succeeded" and candidate.top1 == pytest.approx(0.5)
    # No evaluation of default on v-eval/test yet: nothing to compare with, a button to make one.
    page = staff_client.get(reverse("evaluation:detail", args=[candidate.pk])).content.decode()
    assert "has no evaluation on v-eval/test to compare with" in page and 'id="evaluate-current"' in page
    assert 'id="promote"' not in page
    refused = staff_client.post(reverse("evaluation:promote", args=[candidate.pk]), follow=True)
    assert "has no evaluation on v-eval/test" in refused.content.decode()
    assert ModelAlias.objects.get(name="default").version == one

    current = _evaluate(staff_client, one, version)
    page = staff_client.get(reverse("evaluation:detail", args=[candidate.pk])).content.decode()
    assert '<tr data-metric="top1"><td>top-1</td><td class="num">50.0%</td><td class="num">25.0%</td>' in page
    assert '<td class="num delta-better">+25.0 pt</td>' in page
    assert '<tr data-metric="mean_per_class_accuracy"><td>mean per class</td><td class="num">33.3%</td>' in page
    assert "zero beats one on v-eval/test" in page and 'id="promote"' in page
    # The weaker model's own page offers no promotion.
    weaker = staff_client.get(reverse("evaluation:detail", args=[current.pk])).content.decode()
    assert "one is &#x27;default&#x27; already." in weaker and 'id="promote"' not in weaker

    response = staff_client.post(reverse("evaluation:promote", args=[candidate.pk]), follow=True)
    assert "zero is default now (was one)." in response.content.decode()
    change = AliasChange.objects.first()
    assert (change.alias, change.from_version, change.to_version, change.actor) == ("default", one, zero, staff_user)
    assert change.why.startswith(f"evaluation {candidate.pk}: zero beats one on v-eval/test: top-1 50.0% vs 25.0%")
    # Now the other way round is refused: one does not beat zero.
    again = staff_client.post(reverse("evaluation:promote", args=[current.pk]), follow=True)
    assert "one does not beat zero on v-eval/test (worse on top-1)" in again.content.decode()
    assert ModelAlias.objects.get(name="default").version == zero


def test_the_promotion_gate_still_applies(staff_client, two_models, settings):
    from apps.inference.models import ModelAlias

    version, zero, _ = two_models
    run = _evaluate(staff_client, zero, version)  # no default yet: the first model may be promoted
    settings.KYARA_PROMOTION_MIN = 0.9
    settings.KYARA_PROMOTION_GATED_ALIASES = ["default"]
    response = staff_client.post(reverse("evaluation:promote", args=[run.pk]), follow=True)
    assert "below the 0.9 required for &#x27;default&#x27;" in response.content.decode()
    assert not ModelAlias.objects.exists()
    settings.KYARA_PROMOTION_MIN = 0.4
    staff_client.post(reverse("evaluation:promote", args=[run.pk]))
    assert ModelAlias.objects.get(name="default").version == zero


# --- Staff only ------------------------------------------------------------------------------------

def test_every_form_is_staff_only(viewer_client, approved, two_models, imports_dir):
    from apps.characters.models import DatasetVersion, ImportJob
    from apps.evaluation.models import EvaluationRun
    from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
    from apps.inference.models import ModelAlias
    from apps.training.models import TrainingJob

    version, zero, _ = two_models
    run = evaluation_run_create(model_version=zero, dataset_version=version, split="test", queue=False)
    evaluation_run_execute(run_id=run.pk)
    archive = zip_bytes(pictures({"s_c": 1}))
    posts = {
        reverse("characters:freeze"): {"name": "v9", "val": "0.2", "test": "0.2", "seed": "0", "min_images": "6"},
        reverse("characters:imports"): {"image_status": "approved"},
        reverse("training:start"): _training_form(version),
        reverse("evaluation:start"): {"model_version": zero.pk, "dataset_version": version.pk, "split": "test"},
        reverse("evaluation:promote", args=[run.pk]): {},
    }
    for who in (Client(), viewer_client):
        for url, data in posts.items():
            if url == reverse("characters:imports"):
                data = {**data, "archive": SimpleUploadedFile("a.zip", archive)}
            response = who.post(url, data)
            assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
        for url in (reverse("characters:freeze"), reverse("characters:imports"), reverse("characters:freeze_preview")):
            assert who.get(url).status_code == 302, url
        body = who.get(reverse("training:list")).content.decode() + who.get(reverse("evaluation:list")).content.decode()
        assert "training-start-form" not in body and "evaluation-start-form" not in body
        page = who.get(reverse("evaluation:detail", args=[run.pk])).content.decode()
        assert "would be the first" in page and 'id="promote"' not in page  # the comparison, not the button
    assert DatasetVersion.objects.count() == 1 and not ImportJob.objects.exists() and not TrainingJob.objects.exists()
    assert EvaluationRun.objects.count() == 1 and not ModelAlias.objects.exists()
    assert not imports_dir.exists()
