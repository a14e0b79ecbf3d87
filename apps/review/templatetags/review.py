"""The nav's link to the review page, with how many images wait (staff only)."""
from __future__ import annotations

from django import template
from django.core.cache import cache
from django.utils.html import format_html

from apps.characters.models import Image
from apps.core.templatetags.kyara import nav_link

register = template.Library()

PENDING_CACHE_KEY = "review:nav-pending"
PENDING_CACHE_SECONDS = 30  # one COUNT per half minute whatever the traffic; the review page corrects it live


def pending_count() -> int:
    """Images waiting for review, at most ``PENDING_CACHE_SECONDS`` old."""
    return cache.get_or_set(PENDING_CACHE_KEY, lambda: Image.objects.filter(status=Image.Status.PENDING).count(),
                            PENDING_CACHE_SECONDS)


@register.simple_tag(takes_context=True)
def review_nav_link(context) -> str:
    """``Review (n)`` for staff, nothing for anybody else (the page and its API are staff only)."""
    user = getattr(context.get("request"), "user", None)
    if not (user is not None and user.is_active and user.is_staff):
        return ""
    count = pending_count()
    label = format_html('Review <span class="nav-count" id="nav-review-count">{}</span>'
                        '<span class="sr-only"> images waiting</span>', count)
    return nav_link(context, "review:page", label)
