"""A small world for improvement cycles: three characters, a frozen previous version, a rigged ``default`` and
its evaluation; the fake booru of tests/crawling serves hu-tao's posts, and a qcluster pair (the default and
the training queue) points at it."""
from __future__ import annotations

import json

import pytest

from tests.conftest import queued_tasks as queued  # noqa: F401 - the tests' name for it
from tests.conftest import running_qcluster
from tests.crawling.conftest import TAG, crawl_environment, crawl_settings, world  # noqa: F401 - the fake booru
from tests.evaluation.conftest import (  # noqa: F401 - _fast_serving: eager PyTorch, a fresh predictor cache
    _fast_serving,
    make_characters,
    make_version,
    register_rigged,
    store_image,
)
from tests.training.conftest import FAST

# Per character: enough images that a 25% test share holds 3 of each (tiers need KYARA_EVAL_MIN_SUPPORT).
IMAGES_PER_CHARACTER = 12
SPLITS = {"val": 0.25, "test": 0.25, "seed": 0, "min_images": 6}
# Workers and the training process they start: eager PyTorch (no ONNX export per load), no runtime
# measurement at registration, one training thread.
WORKER_ENV = {"KYARA_INFERENCE_BACKEND": "torch", "KYARA_RUNTIME_CHOOSE_ON_REGISTER": "0",
              "KYARA_TRAINING_THREADS": "1", "KYARA_ALIAS_WATCH_SECONDS": "0", "KYARA_EVAL_LATENCY_IMAGES": "3"}
TRAINING = {**FAST, "epochs": 1}


@pytest.fixture(autouse=True)
def _no_runtime_measurement(settings):
    settings.KYARA_RUNTIME_CHOOSE_ON_REGISTER = False


def make_world(*, default_logits=(3.0, 0.0)) -> dict:
    """char-0 and char-1 (learnable pictures) and hu-tao, approved; ``v0`` frozen from them; ``default`` a rigged
    model that knows char-0 and char-1 and always answers char-0; a succeeded evaluation of it on v0/test.

    Tiers: char-1 and hu-tao (unknown to the model) are at 0% (P1); char-0 at 100% gets a rule of its own
    (P4), so a plan has two tiers to crawl one after the other."""
    from apps.characters.services import dataset_version_freeze
    from apps.evaluation.models import DEFAULT_TIER_RULES, TierRule
    from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
    from apps.inference.services import model_alias_set

    char0, char1, hu_tao = make_characters(["char-0", "char-1", "hu-tao"])
    for character in (char0, hu_tao):
        character.booru_tags = {"danbooru": TAG, "gelbooru": TAG}
        character.save()
    seed = 0
    for label, character in enumerate((char0, char1, hu_tao)):
        for _ in range(IMAGES_PER_CHARACTER):
            seed += 1
            store_image(label=label, seed=seed, character=character)
    v0 = dataset_version_freeze(name="v0", **SPLITS)
    for rule in DEFAULT_TIER_RULES:  # a flushed database (transactional tests) lost the seeded rules
        TierRule.objects.get_or_create(priority=rule["priority"], defaults=rule)
    TierRule.objects.create(priority=4, name="P4: the rest", max_accuracy=1.0, inclusive=True, images=5)
    default = register_rigged("rigged-default", ["char-0", "char-1"], list(default_logits), dataset_version=v0)
    model_alias_set(name="default", version=default)
    run = evaluation_run_create(model_version=default, dataset_version=v0, split="test", queue=False)
    run = evaluation_run_execute(run_id=run.pk)
    assert run.status == "succeeded", run.error
    return {"v0": v0, "default": default, "evaluation": run, "characters": (char0, char1, hu_tao)}


@pytest.fixture
def cycle_world(db):
    return make_world()


@pytest.fixture
def cycle_qcluster(transactional_db, world, tmp_path):  # noqa: F811 - the fake booru fixture, imported above
    """Both clusters (default and training queues) on the test database, every source pointed at the fake booru."""
    local_root = tmp_path / "incoming"
    local_root.mkdir(exist_ok=True)
    env = {key: value if isinstance(value, str) else json.dumps(value, default=str)
           for key, value in crawl_environment(world, local_root).items()}
    # A read timeout longer than the slow site of the cancel test (tests/crawling keeps 0.4 s to test timeouts).
    env.update(KYARA_CRAWL_ALLOW_PRIVATE="127.0.0.1/32", KYARA_CRAWL_LOCAL_ROOT=str(local_root),
               KYARA_CRAWL_READ_TIMEOUT="5", **WORKER_ENV)
    with running_qcluster("qcluster-cycle.log", **env) as proc:
        yield proc


ALWAYS_CHAR_0 = [4.0, 0.0]
ALWAYS_CHAR_1 = [0.0, 4.0]


def _version_with_more_char_0(name: str, characters, seed_base: int):
    """Two test images of each character, and two more of char-0."""
    extra = [(store_image(label=0, seed=seed_base + 500 + i, character=characters[0]), characters[0], "test")
             for i in range(2)]
    return make_version(name, characters, train=2, val=1, test=2, seed_base=seed_base, extra=extra)


@pytest.fixture
def at_evaluate(db, settings, django_capture_on_commit_callbacks):
    """``start(**options)``: a cycle whose new model (trained on v1, always answers char-0) waits to be evaluated,
    default being a model trained on v0 (always answers char-1) and evaluated on v0/test. Both test splits hold
    four char-0 and two char-1 images: the new model scores 67%, default 33%."""
    from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
    from apps.improvement.models import Cycle
    from apps.improvement.services import cycle_advance, initial_stages
    from apps.inference.services import model_alias_set
    from apps.training.models import TrainingJob

    settings.KYARA_RUN_TASKS_INLINE = True  # the evaluations the cycle queues run here
    characters = make_characters(["char-0", "char-1"])
    v0, v1 = (_version_with_more_char_0("v0", characters, 0), _version_with_more_char_0("v1", characters, 100))
    default = register_rigged("old-default", ["char-0", "char-1"], ALWAYS_CHAR_1, dataset_version=v0)
    model_alias_set(name="default", version=default)
    run = evaluation_run_create(model_version=default, dataset_version=v0, queue=False)
    run = evaluation_run_execute(run_id=run.pk)
    candidate = register_rigged("new-model", ["char-0", "char-1"], ALWAYS_CHAR_0, dataset_version=v1)

    def start(**options):
        job = TrainingJob.objects.create(dataset_version=v1, status="succeeded", model_version=candidate)
        stages = [{**record, "status": "succeeded"} if record["name"] in ("plan", "crawl", "review", "wait", "freeze",
                                                                        "train") else record
                  for record in initial_stages()]
        cycle = Cycle.objects.create(from_evaluation=run, stage="evaluate", stages=stages, dataset_version=v1,
                                     training_job=job, **options)
        with django_capture_on_commit_callbacks(execute=True):  # evaluations run, their end advances the cycle
            cycle_advance(cycle_id=cycle.pk)
        return Cycle.objects.get(pk=cycle.pk)

    return {"start": start, "default": default, "candidate": candidate, "run": run}
