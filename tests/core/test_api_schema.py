"""The API keeps its own schema: Schemathesis against the live test server, anonymous and with a staff token.

Three checks: no 5xx (``not_a_server_error``), every status code documented (``status_code_conformance``),
every body as documented (``response_schema_conformance``). Bounded (5 examples per operation in the
fuzzing phase, plus the coverage phase's boundary values) and seeded, so a run is repeatable. The world
it meets: a promoted model (so /health is ready and /predict answers), a second model version, and characters
with approved images. It holds no frozen dataset version, evaluation run, job or pending review yet: list
endpoints of those are fuzzed empty.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.inference.conftest import CLASSES, class_image_bytes, register, trained_artifacts  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
SEED = 0
MAX_EXAMPLES = 5


@pytest.fixture
def api_world(live_server, trained_artifacts, settings, throttle_rates):  # noqa: F811 - imported fixture
    """A promoted model and a second version, three characters with approved images; a staff token."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from apps.characters.services import character_get_or_create, image_ingest, series_get_or_create
    from apps.inference.loading import predictor_cache
    from apps.inference.services import model_alias_set

    settings.KYARA_ALIAS_WATCH_SECONDS = 0
    # Fast enough for a fuzzer, slow enough that nothing but the fuzzer's own volume is measured.
    throttle_rates(anon="100000/min", user="100000/min", login="100000/min", predict_anon="100000/min",
                   predict_user="100000/min", model_load="100000/hour")
    series = series_get_or_create(slug="colors", name="Colors")
    for slug, (name, _) in CLASSES.items():
        character = character_get_or_create(series=series, name=name)
        for seed in range(3):
            image_ingest(data=class_image_bytes(slug, seed), source_kind="import", character=character)
    model_alias_set(name="default", version=register(trained_artifacts.v1, "simple-v1"), why="schema test")
    register(trained_artifacts.v2, "simple-v2")
    staff = get_user_model().objects.create_user("fuzz-staff", password="pw-fuzz-staff", is_staff=True)
    yield Token.objects.create(user=staff).key
    predictor_cache.clear()


def run_schemathesis(base_url: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{base_url}/api/v1/schema/",
        "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--phases", "examples,coverage,fuzzing", "--workers", "2", "--generation-database", "none",
        "--request-timeout", "60", "--no-color", *extra,
    ]
    # In its own folder: Schemathesis keeps state in the working directory (.schemathesis/).
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=workdir)


@pytest.mark.parametrize("who", ["anonymous", "staff"])
def test_the_api_answers_as_its_schema_says(who, api_world, live_server, tmp_path):
    extra = ["--header", f"Authorization: Token {api_world}"] if who == "staff" else []
    result = run_schemathesis(live_server.url, tmp_path, *extra)
    report = result.stdout + result.stderr
    assert "Tested: " in report, report[-5000:]
    tested = int(report.split("Tested: ", 1)[1].split()[0])
    assert tested >= 60, report[-5000:]  # every operation, not a schema that failed to load
    assert result.returncode == 0, report[-20000:]
