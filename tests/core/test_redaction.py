"""Secrets never reach a stored error: one function (apps.core.redaction.redact_secrets), and a field that
applies it to every write of a job's error."""
import pytest

from apps.core.redaction import REDACTED, redact_secrets


@pytest.mark.parametrize("text, secret, kept", [
    ("the listing is not JSON (https://danbooru.donmai.us/posts.json?tags=hu_tao&login=kyara&api_key=k3y"
     "&page=b110)", ["login=kyara", "k3y"], ["tags=hu_tao", "page=b110"]),
    ("Max retries exceeded with url: /index.php?page=dapi&s=post&user_id=123&api_key=zzz (Caused by ...)",
     ["user_id=123", "zzz"], ["page=dapi", "Caused by"]),
    ("params={'login': 'bob', 'api_key': 'abc', 'tags': 'x'}", ["'bob'", "'abc'"], ["'tags': 'x'"]),
    ('{"password": "hunter2", "user": "x"}', ["hunter2"], ['"user": "x"']),
    ("could not connect to postgres://kyara:pw0rd@db.example:5432/kyara", ["pw0rd", "kyara:"], ["db.example:5432"]),
    ("headers {'Authorization': 'Token 0123456789abcdef'}", ["0123456789abcdef"], ["Authorization"]),
    ("GET https://bucket.s3.example/x.png?X-Amz-Signature=abcd&X-Amz-Credential=AKIA/2026", ["abcd", "AKIA"],
     ["x.png"]),
])
def test_patterns(text, secret, kept):
    redacted = redact_secrets(text)
    assert REDACTED in redacted
    assert not any(s in redacted for s in secret), redacted
    assert all(k in redacted for k in kept), redacted


def test_ordinary_text_is_left_alone():
    text = "HTTP 404 from http://127.0.0.1:8000/img/120.png; contact kyara-admin@example.invalid; key frames: 3"
    assert redact_secrets(text) == text


def test_known_secret_values_are_redacted_wherever_they_appear(settings):
    settings.KYARA_CRAWL_CREDENTIALS = {"gelbooru": {"user_id": "4242", "api_key": "s3cr3t-VALUE-99"}}
    assert redact_secrets("the site said: bad key s3cr3t-VALUE-99 for you") == f"the site said: bad key {REDACTED} for you"
    assert "4242" in redact_secrets("post 4242 is gone")  # an account id alone is an ordinary number


@pytest.mark.django_db
def test_a_job_error_is_stored_redacted_whichever_way_it_is_written():
    from apps.characters.services import character_get_or_create, series_get_or_create
    from apps.crawling.models import CrawlJob

    character = character_get_or_create(series=series_get_or_create(slug="s"), name="c")
    job = CrawlJob.objects.create(source="danbooru", character=character, quota=1,
                                  error="boom at https://x.example/posts.json?login=me&api_key=SAVEDKEY1")
    assert "SAVEDKEY1" not in job.error  # the instance shows what was stored
    CrawlJob.objects.filter(pk=job.pk).update(error="again: api_key=UPDATEDKEY2")
    job.refresh_from_db()
    assert job.error == f"again: api_key={REDACTED}"
    assert not [e for e in CrawlJob.objects.values_list("error", flat=True) if "SAVEDKEY1" in e or "UPDATEDKEY2" in e]


def test_the_log_is_redacted_too():
    import logging

    from apps.core.redaction import RedactingFormatter

    handlers = [h for h in logging.getLogger().handlers if isinstance(h.formatter, RedactingFormatter)]
    assert handlers, "the console and file handlers format through RedactingFormatter"
    try:
        raise ValueError("fetching https://gelbooru.com/index.php?user_id=7&api_key=LOGGEDKEY failed")
    except ValueError:
        import sys

        record = logging.LogRecord("kyara", logging.ERROR, __file__, 1, "crawl failed: %s", ("api_key=ARGKEY",),
                                   sys.exc_info())
    line = handlers[0].formatter.format(record)
    assert "LOGGEDKEY" not in line and "ARGKEY" not in line and "crawl failed" in line and "ValueError" in line
