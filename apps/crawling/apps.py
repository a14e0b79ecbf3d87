from django.apps import AppConfig


class CrawlingConfig(AppConfig):
    name = "apps.crawling"
    label = "crawling"
