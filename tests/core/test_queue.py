import uuid

import pytest

from apps.core.models import Heartbeat
from apps.core.queue import enqueue
from apps.core.tasks import heartbeat
from tests.conftest import wait_for

pytestmark = [pytest.mark.queue, pytest.mark.slow, pytest.mark.backend]


def test_enqueue_runs_in_a_real_qcluster_worker(qcluster):
    """A real qcluster process (ORM broker here, Redis broker in the scale run) runs the task."""
    token = uuid.uuid4().hex
    task_id = enqueue(heartbeat, token, group="test")
    assert task_id
    beat = wait_for(lambda: Heartbeat.objects.filter(token=token).first(), timeout=60, message="the heartbeat task")
    assert beat.worker_pid != 0
    import os

    assert beat.worker_pid != os.getpid()  # it ran in the worker, not here


def test_enqueue_by_dotted_path_reaches_the_worker(qcluster):
    token = uuid.uuid4().hex
    enqueue("apps.core.tasks.heartbeat", token)
    wait_for(lambda: Heartbeat.objects.filter(token=token).exists(), timeout=60, message="the heartbeat task")
