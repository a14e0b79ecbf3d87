"""Aliases: set, history, rollback, the promotion gate, the command, the admin, the caches, and switches
under concurrent requests."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.management import CommandError, call_command

from apps.core.api import ServiceError
from apps.inference import services
from apps.inference.loading import alias_watcher, predictor_cache
from apps.inference.models import AliasChange, ModelAlias
from tests.conftest import wait_for

from .conftest import LABELS, class_image_bytes


@pytest.mark.backend
def test_alias_set_records_who_when_from_to_why(registry, staff_user):
    change = services.model_alias_set(name="default", version="simple-v2", actor=staff_user, why="better val")
    assert (change.alias, change.from_version, change.to_version, change.actor, change.why, change.kind) == (
        "default", registry.v1, registry.v2, staff_user, "better val", "set")
    assert change.at is not None and ModelAlias.objects.get(name="default").version == registry.v2
    assert predictor_cache.peek(registry.v2) is not None  # warmed before the alias moved


@pytest.mark.backend
def test_rollback_returns_to_the_previous_version_and_is_recorded(registry, staff_user):
    services.model_alias_set(name="default", version=registry.v2, why="try v2")
    change = services.model_alias_rollback(name="default", actor=staff_user, why="v2 regressed")
    assert (change.kind, change.from_version, change.to_version, change.why) == (
        "rollback", registry.v2, registry.v1, "v2 regressed")
    assert ModelAlias.objects.get(name="default").version == registry.v1
    # Rolling back the rollback goes forward again; the first change has nothing before it.
    assert services.model_alias_rollback(name="default").to_version == registry.v2
    assert AliasChange.objects.filter(alias="default").count() == 4


@pytest.mark.backend
@pytest.mark.django_db(transaction=True)
def test_an_answer_cached_by_a_request_that_raced_a_move_is_never_read(registry):
    """A request reads the alias (old version) just before a move commits and writes its cache entry just after
    the move's invalidation: the next request must still get the new version, not the late entry."""
    from apps.inference.selectors import alias_key, model_resolve

    assert model_resolve("default")[0] == registry.v1
    racing_key = alias_key("default")  # the racing request's key and stale read, taken before the move
    stale = tuple(ModelAlias.objects.filter(name="default").values_list("version_id", "version__updated_at")[0])
    services.model_alias_set(name="default", version=registry.v2, why="move")
    from django.core.cache import cache

    cache.set(racing_key, stale, 3600)  # its late write, after the invalidation
    assert model_resolve("default")[0] == registry.v2


def test_rollback_refusals(registry):
    with pytest.raises(ServiceError) as caught:
        services.model_alias_rollback(name="default")  # only the first set so far
    assert caught.value.code == "nothing_to_roll_back"
    with pytest.raises(ServiceError) as caught:
        services.model_alias_rollback(name="nonesuch")
    assert caught.value.code == "unknown_alias" and caught.value.status_code == 404


@pytest.mark.backend
def test_a_rollback_refuses_when_the_alias_moved_while_its_target_loaded(registry, monkeypatch):
    """A rollback reads the alias's last change, loads its target outside the transaction, then moves the alias
    under a lock: a move that landed in between is not undone blindly (409, the alias stays where it went)."""
    services.model_alias_set(name="default", version=registry.v2, why="try v2")
    load = services._ensure_loadable

    def another_move_meanwhile(target) -> None:
        load(target)
        monkeypatch.setattr(services, "_ensure_loadable", load)
        services.model_alias_set(name="default", version=registry.v1, why="moved by someone else meanwhile")

    monkeypatch.setattr(services, "_ensure_loadable", another_move_meanwhile)
    with pytest.raises(ServiceError) as caught:
        services.model_alias_rollback(name="default", why="v2 regressed")
    assert caught.value.code == "alias_changed" and caught.value.status_code == 409
    assert ModelAlias.objects.get(name="default").version == registry.v1
    assert list(AliasChange.objects.filter(alias="default").values_list("kind", flat=True)) == ["set"] * 3


def test_invalid_alias_and_unknown_version(registry):
    with pytest.raises(ServiceError, match="lowercase"):
        services.model_alias_set(name="Bad Name!", version=registry.v1)
    with pytest.raises(ServiceError) as caught:
        services.model_alias_set(name="candidate", version="nope")
    assert caught.value.code == "unknown_model"  # the one resolver's answer, as the predict API gives it


def test_promotion_gate(registry, settings):
    settings.KYARA_PROMOTION_MIN = 0.92  # v1 has 0.9, v2 0.95
    with pytest.raises(ServiceError) as caught:
        services.model_alias_set(name="default", version=registry.v1)
    assert caught.value.code == "promotion_gate" and "0.9" in caught.value.message
    services.model_alias_set(name="default", version=registry.v2)
    services.model_alias_set(name="candidate", version=registry.v1)  # not a gated alias
    forced = services.model_alias_set(name="default", version=registry.v1, force=True, why="hotfix")
    assert forced.why == "hotfix [promotion gate overridden]"
    registry.v2.metrics = {}
    registry.v2.save()
    with pytest.raises(ServiceError, match="no 'accuracy' metric"):
        services.model_alias_set(name="default", version=registry.v2)


def test_alias_api_is_staff_only_and_works(api_client, staff_api_client, registry):
    assert api_client.post("/api/v1/aliases/default/set", {"version": "simple-v2"}).status_code in (401, 403)
    assert api_client.post("/api/v1/aliases/default/rollback").status_code in (401, 403)
    assert api_client.post("/api/v1/models/simple-v2/promote").status_code in (401, 403)
    response = staff_api_client.post("/api/v1/aliases/default/set/", {"version": "simple-v2", "why": "api"},
                                     format="json")
    assert response.status_code == 200 and response.json()["to_version"] == "simple-v2"
    assert response.json()["actor"] == "curator"
    response = staff_api_client.post("/api/v1/aliases/default/rollback", {"why": "oops"}, format="json")
    assert response.json()["kind"] == "rollback" and response.json()["to_version"] == "simple-v1"
    response = staff_api_client.post("/api/v1/models/simple-v2/promote", {"alias": "candidate"}, format="json")
    assert response.status_code == 200 and response.json()["from_version"] is None
    history = api_client.get("/api/v1/aliases/default/history").json()
    assert [h["kind"] for h in history] == ["rollback", "set", "set"] and history[0]["why"] == "oops"
    listed = api_client.get("/api/v1/aliases").json()
    assert {a["name"]: a["version"] for a in listed} == {"candidate": "simple-v2", "default": "simple-v1"}


def test_set_alias_command(registry):
    call_command("set_alias", "default", "simple-v2", "--why", "from the shell")
    change = AliasChange.objects.first()
    assert change.to_version == registry.v2 and change.why == "from the shell"
    call_command("set_alias", "default", "--rollback")
    assert ModelAlias.objects.get(name="default").version == registry.v1
    with pytest.raises(CommandError, match="unknown_model"):
        call_command("set_alias", "default", "nope")
    with pytest.raises(CommandError, match="either"):
        call_command("set_alias", "default")


def test_admin_pages_and_alias_change_through_the_service(admin_client, registry):
    for url in ["/admin/inference/modelversion/", f"/admin/inference/modelversion/{registry.v1.pk}/change/",
                "/admin/inference/modelalias/", "/admin/inference/aliaschange/"]:
        assert admin_client.get(url).status_code == 200, url
    alias = ModelAlias.objects.get(name="default")
    response = admin_client.post(f"/admin/inference/modelalias/{alias.pk}/change/",
                                 {"version": registry.v2.pk, "why": "from the admin"})
    assert response.status_code == 302
    assert AliasChange.objects.first().why == "from the admin"
    admin_client.post("/admin/inference/modelalias/", {"action": "roll_back", "_selected_action": [alias.pk]})
    assert ModelAlias.objects.get(name="default").version == registry.v1


@pytest.mark.django_db(transaction=True)
def test_predictor_cache_is_lru_and_loads_once_under_concurrency(registry, settings):
    settings.KYARA_PREDICTOR_CACHE_SIZE = 1
    predictor_cache.clear()
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: predictor_cache.get(registry.v2), range(8)))
    assert len({id(entry) for entry in loaded}) == 1  # one load, shared
    predictor_cache.get(registry.v1)
    assert predictor_cache.peek(registry.v2) is None and predictor_cache.peek(registry.v1) is not None


def test_alias_watcher_warms_the_default_model(registry):
    predictor_cache.clear()
    alias_watcher.warm_once()
    assert [m["version"] for m in predictor_cache.describe()] == ["simple-v1"]


@pytest.mark.backend
@pytest.mark.cache
def test_result_cache_on_redis(redis_url, settings, api_client, registry):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url,
                                   "KEY_PREFIX": "kyara-test-inference", "TIMEOUT": 60}}
    from django.core.cache import cache

    cache.clear()
    data = class_image_bytes(LABELS[2], 31)
    first = api_client.post("/api/v1/predict", {"file": _file(data)}).json()
    second = api_client.post("/api/v1/predict", {"file": _file(data)}).json()
    assert first["cached"] is False and second["cached"] is True and second["label"] == LABELS[2]
    keys = [k for k in cache._cache.get_client().keys("kyara-test-inference:*") if b"kyara:predict:" in k]
    assert keys  # really in Redis, shared by every process
    cache.clear()


def _file(data: bytes, name: str = "picture.jpg"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)


@pytest.mark.backend
@pytest.mark.django_db(transaction=True)
def test_alias_switch_and_rollback_under_concurrent_requests(live_server, characters, trained_artifacts):
    """Four clients keep predicting over real HTTP while the alias moves and rolls back: no request fails,
    every answer names one of the two versions, and after the last move the new version answers."""
    from .conftest import register

    v1 = register(trained_artifacts.v1, "live-v1")
    v2 = register(trained_artifacts.v2, "live-v2")
    predictor_cache.get(v2)  # its first load on this machine measures its runtime: not what is tested here
    services.model_alias_set(name="default", version=v1)
    images = [class_image_bytes(label, 50 + i) for i in range(2) for label in LABELS]
    url = f"{live_server.url}/api/v1/predict"
    stop = threading.Event()
    seen, failures = [], []

    def client(worker: int) -> None:
        session = requests.Session()
        n = 0
        while not stop.is_set() and n < 60:
            data = images[(worker + n) % len(images)]
            response = session.post(f"{url}?top_k={1 + n % 3}", files={"file": ("x.jpg", data)}, timeout=30)
            if response.status_code != 200:
                failures.append((response.status_code, response.text[:200]))
            else:
                seen.append(response.json()["model"]["version"])
            n += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    def some_more_answers() -> None:  # let requests land between the moves
        target = len(seen) + len(failures) + 3
        wait_for(lambda: len(seen) + len(failures) >= target or stop.is_set(), timeout=30, interval=0.01,
                 message="answers between alias moves")

    for step in range(3):
        some_more_answers()
        services.model_alias_set(name="default", version=v2, why=f"switch {step}")
        some_more_answers()
        services.model_alias_rollback(name="default", why=f"rollback {step}")
    some_more_answers()
    services.model_alias_set(name="default", version=v2, why="final")
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[:3]
    assert len(seen) >= 21 and set(seen) == {"live-v1", "live-v2"}
    final = requests.post(url, files={"file": ("x.jpg", images[0])}, timeout=30).json()
    assert final["model"]["version"] == "live-v2"
    assert AliasChange.objects.filter(alias="default").count() == 8
