"""A crawl's stored error never shows the account's credentials, though the request carried them."""
import pytest

from apps.crawling.models import CrawlJob
from apps.crawling.services import crawl_job_create, crawl_job_run

pytestmark = pytest.mark.django_db


def test_a_listing_that_is_not_json_does_not_leak_the_api_key(world, crawl_settings, character, settings, api_client):
    settings.KYARA_CRAWL_CREDENTIALS = {"danbooru": {"login": "kyara-bot", "api_key": "Sup3rSecretApiKey"}}
    # The site answers its listing with text (a maintenance page, a mirror that lost its API).
    settings.KYARA_SOURCE_ROOTS = {**settings.KYARA_SOURCE_ROOTS, "danbooru": f"{world.root}/urls.txt?via="}
    job = crawl_job_create(source="danbooru", character=character, query="", quota=5, queue=False)
    job = crawl_job_run(job_id=job.pk)
    assert world.params_seen[-1]["api_key"] == "Sup3rSecretApiKey"  # the request did carry the credentials
    assert job.status == CrawlJob.Status.FAILED and "not JSON" in job.error and "[redacted]" in job.error
    public = api_client.get(f"/api/v1/crawl-jobs/{job.pk}/").content.decode()
    for text in (job.error, CrawlJob.objects.get(pk=job.pk).error, public):
        assert "Sup3rSecretApiKey" not in text and "kyara-bot" not in text
