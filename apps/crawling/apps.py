from django.apps import AppConfig


class CrawlingConfig(AppConfig):
    name = "apps.crawling"
    label = "crawling"
    verbose_name = "Crawling"

    def ready(self) -> None:
        from .admin import attach_character_actions
        from .sources import load_source_plugins, register_builtin_sources, sources

        if "danbooru" not in sources:  # ready() may run twice in some test runners
            register_builtin_sources()
            load_source_plugins()
        attach_character_actions()
