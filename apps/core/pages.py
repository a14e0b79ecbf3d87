"""What every app's pages share: the staff-only decorators and the one shape of a job action.

Each app's pages live in ``apps/<app>/pages/`` (views + urls with an ``app_name``); a view reads through
selectors and acts through services, and the browser's JavaScript polls the REST API for what changes."""
from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.decorators import user_passes_test
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from .api import ServiceError

LIST_LIMIT = 200

staff_required = user_passes_test(lambda user: user.is_active and user.is_staff)


def staff_action(view):
    """A POST-only, staff-only action: a service refusal comes back as a message on the page it came from."""

    @functools.wraps(view)
    @require_POST
    @staff_required
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect(request.POST.get("next") or request.META.get("HTTP_REFERER") or reverse("dashboard:home"))

    return wrapper


def refuse_into(form, exc: ServiceError, fields: dict[str, str] | None = None) -> None:
    """Show a service's refusal on the form that asked for it: next to the field its code is about (``fields``
    maps codes to field names), else above the form. The caller answers 400 with the form."""
    form.add_error((fields or {}).get(exc.code), exc.message)


def form_action(form_class, *, page, act, fields: dict[str, str] | None = None):
    """A staff form that starts something (a crawl, a training job, an evaluation, a cycle, an alias move): POST
    only. A valid form goes to ``act(request, form)``, a service call that answers where to go next; a bad form,
    or the service's refusal (next to the field its code names in ``fields``, else above the form), comes back
    on ``page(request, form)`` with a 400."""

    @require_POST
    @staff_required
    def view(request):
        form = form_class(request.POST)
        if form.is_valid():
            try:
                return act(request, form)
            except ServiceError as exc:
                refuse_into(form, exc, fields)
        return page(request, form)

    return view


def job_action(service, model, detail: str, done: str):
    """A staff action on one job (cancel, retry, resume): the service acts, the job's page shows the result."""

    @staff_action
    def view(request, pk: int):
        service(job=get_object_or_404(model, pk=pk))
        messages.success(request, done.format(pk=pk))
        return redirect(detail, pk=pk)

    return view
