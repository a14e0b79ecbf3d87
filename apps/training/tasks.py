"""django-q tasks: take ids, start the training process, watch it. Never train in the worker itself."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from . import services
from .models import TrainingJob

logger = logging.getLogger(__name__)


def training_command(job: TrainingJob, *, token: str) -> list[str]:
    """``manage.py train_job ID`` (under ``torchrun --standalone`` when several processes are configured)."""
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    args = ["train_job", str(job.pk), "--token", token]
    if job.resume_requested:
        args.append("--resume")
    processes = settings.KYARA_TRAINING_PROCESSES
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                manage, *args]
    return [sys.executable, manage, *args]


def log_tail(path: str | Path, limit: int = 8000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - limit, 0))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def launch_training_job(job_id: int) -> dict:
    """Start the training process for a queued job and wait for it; enforce cancels; record a silent death.

    Runs at most once per queueing: a job already launched, started or finished is left alone, so
    neither a duplicate task nor a django-q retry can train a job twice.
    """
    token = services.training_job_mark_launched(job_id=job_id)
    if token is None:
        status = TrainingJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
        logger.warning("Training job %s not launched: it is %s or already launched", job_id, status)
        return {"job": job_id, "launched": False, "status": status}
    job = TrainingJob.objects.get(pk=job_id)
    log_path = Path(job.log_path or job.run_path / "train.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    TrainingJob.objects.filter(pk=job_id).update(log_path=str(log_path))
    command = training_command(job, token=token)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        log.write(f"\n--- {timezone.now().isoformat()} launching: {' '.join(command)}\n".encode())
        log.flush()
        # A session of its own: a signal for the worker does not reach the training process, and
        # a cancel can reach every torchrun rank at once through the process group.
        proc = subprocess.Popen(command, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        returncode = _watch(job_id, proc)
    job.refresh_from_db()
    if job.status in TrainingJob.ACTIVE and job.launch_token == token:
        # The process died without a word (killed, out of memory, crashed in C): say so, keep the log.
        # Written under the launch token, so a resume that took the job over meanwhile is left alone.
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        if job.cancel_requested:
            services.training_job_mark_cancelled(job=job)
        else:
            stop = TrainingJob.StopReason.LOST if returncode < 0 else TrainingJob.StopReason.ERROR
            services.training_job_fail(job=job, error=f"The training process {how} before reporting; see the log "
                                       f"at {log_path}. Resume the job to continue from its last checkpoint.",
                                       traceback=log_tail(log_path), stop_reason=stop)
        job.refresh_from_db()
    return {"job": job_id, "launched": True, "returncode": returncode, "status": job.status}


def _watch(job_id: int, proc: subprocess.Popen) -> int:
    cancel_seen_at = None
    terminated = False
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if cancel_seen_at is None:
            if TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists():
                cancel_seen_at = time.monotonic()
            continue
        waited = time.monotonic() - cancel_seen_at
        if waited > settings.KYARA_TRAINING_CANCEL_GRACE and not terminated:
            logger.warning("Training job %s did not stop within %.0fs of its cancel; terminating it", job_id, waited)
            _signal_group(proc, signal.SIGTERM)
            terminated = True
        elif waited > settings.KYARA_TRAINING_CANCEL_GRACE + 10:
            _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass

