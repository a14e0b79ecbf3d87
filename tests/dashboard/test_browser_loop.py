"""The whole first loop in real headless Chromium against the live server, with real qcluster workers: a staff
user imports a zip from the browser, freezes a version, starts a training run (1 epoch, 32 px), evaluates the
model and promotes it to default. Each stage leaves a screenshot under var/test/screenshots/loop-*.png.

The steps are ``FirstLoop.run`` (tests/dashboard/conftest.py), which the improvement cycle's browser story
(test_browser_cycle.py) goes through first as well."""
from __future__ import annotations

import pytest

from tests.conftest import running_qcluster

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_import_freeze_train_evaluate_promote_from_the_browser(first_loop):
    with running_qcluster("qcluster-loop.log", **first_loop.worker_env):
        done = first_loop.run()
        done.browser.assert_no_js_errors()
