"""The admin's plugin page: every registry with its entries and where they came from, and the plugins
that failed to load (a broken plugin never stops Kyara; it is shown here)."""
from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path

from .plugins import plugin_failures
from .registry import all_registries
from .throttling import throttle_login_posts


def plugins_view(request):
    registries = [
        {"kind": r.kind, "entries": [(name, r.origin(name)) for name in r.names()]}
        for r in all_registries()
        if not r.kind.startswith("test")
    ]
    context = {**admin.site.each_context(request), "title": "Plugins", "registries": registries,
               "failures": plugin_failures()}
    return TemplateResponse(request, "admin/plugins.html", context)


_original_get_urls = admin.site.get_urls


def _get_urls():
    return [path("plugins/", admin.site.admin_view(plugins_view), name="plugins")] + _original_get_urls()


admin.site.get_urls = _get_urls
# Log-in attempts to the admin count against the same per-address rate as every other log-in.
admin.site.login = throttle_login_posts(admin.site.login)
