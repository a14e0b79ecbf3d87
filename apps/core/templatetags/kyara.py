"""Small template helpers for the pages: the nav, percentages, status badges, the chart library's URL."""
from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.html import format_html

from apps.core.charts import plotly_version

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_link(context, name: str, label: str):
    url = reverse(name)
    path = context["request"].path
    current = path == url or (url != "/" and path.startswith(url))
    if current:
        return format_html('<a href="{}" aria-current="page" class="current">{}</a>', url, label)
    return format_html('<a href="{}">{}</a>', url, label)


@register.filter
def pct(value, digits: int = 1):
    """0.8734 → '87.3%'; empty for None."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value) * 100:.{int(digits)}f}%"
    except (TypeError, ValueError):
        return "—"


@register.filter
def status_badge(status: str):
    return format_html('<span class="status status-{}" data-status>{}</span>', status or "none", status or "—")


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key, 0)


@register.simple_tag
def plotly_js_url() -> str:
    return reverse("plotly-js", kwargs={"version": plotly_version()})


@register.filter
def metric(value):
    """A metric as a person reads it: floats to four significant digits, the rest as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value
