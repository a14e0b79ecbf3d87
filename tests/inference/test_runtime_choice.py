"""Which runtime serves a version: judged on the version's own validation images, timed, decided once per
kind of machine and recorded on the version (apps/ml/runtime_choice.py, services.model_version_runtime_choose).

Real models (the session's trained ``simple`` CNN), real stored images, real runtimes; a runtime this machine
lacks is skipped with its reason, as in production.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from apps.ml import backends, runtime_choice
from apps.ml.runtime import MicroBatcher, load_predictor
from tests.conftest import ROOT, child_env

from .conftest import LABELS, class_image_bytes, register, store_dataset

REDUCED = ("openvino-bf16", "onnxruntime-int8", "openvino-int8")


def _guard(count: int = 8):
    """(bytes, label index) of fresh pictures of every class: the validation images of the unit tests."""
    return [(class_image_bytes(label, 600 + i), index) for i in range(count) for index, label in enumerate(LABELS)]


def _calibration(count: int = 6):
    return [class_image_bytes(label, 700 + i) for i in range(count) for label in LABELS]


@pytest.fixture
def predictor(trained_artifacts, tmp_path):
    return load_predictor(trained_artifacts.v1, backend="torch", onnx_cache_dir=tmp_path, batch_threads=2)


def _rows(record: dict) -> dict:
    return {row["name"]: row for row in record["candidates"]}


def test_judge_allows_agreement_and_refuses_with_the_numbers():
    reference = np.eye(3)[[0, 1, 2] * 100]  # 300 images, all right
    labels = [0, 1, 2] * 100
    same = runtime_choice.judge(reference, reference + 0.01, labels)
    assert same["allowed"] and same["agreement"] == 1.0 and same["accuracy_delta_points"] == 0
    flipped = reference.copy()
    flipped[:4] = np.roll(flipped[:4], 1, axis=1)  # 4 of 300 answers differ: 98.67% agreement, -1.33 points
    verdict = runtime_choice.judge(reference, flipped, labels)
    assert not verdict["allowed"]
    assert "98.67% of 300 val images" in verdict["reason"] and "-1.33 points" in verdict["reason"]
    one = reference.copy()
    one[:3] = np.roll(one[:3], 1, axis=1)  # 3 of 300: 99.0% agreement, -1.0 points: the accuracy bound refuses
    verdict = runtime_choice.judge(reference, one, labels)
    assert not verdict["allowed"] and "agrees" not in verdict["reason"] and "-1.00 points" in verdict["reason"]


def test_candidates_are_judged_on_real_images_and_the_fastest_allowed_one_chosen(predictor, tmp_path):
    record = runtime_choice.choose_runtime(predictor, guard=_guard(), calibration=_calibration(),
                                           int8_path=tmp_path / "int8.onnx", rounds=2)
    rows = _rows(record)
    assert record["validation_images"] == 24 and record["reference_accuracy"] == 1.0
    assert rows["torch"]["agreement"] == 1.0 and rows["onnxruntime"]["agreement"] == 1.0
    for row in rows.values():  # every candidate has a verdict with its reason, or the reason it did not run
        assert row["status"] in {"chosen", "allowed", "refused", "skipped", "failed"} and row["reason"]
        if row["status"] in ("chosen", "allowed"):
            assert row["agreement"] >= 0.99 and abs(row["accuracy_delta_points"]) <= 0.5 and row["ms_b1"] > 0
    if not backends.torch.cuda.is_available():
        assert rows["cuda-fp16"]["status"] == "skipped" and rows["cuda-fp16"]["reason"] == "no CUDA device"
    native, why = backends.native_bf16()
    if not native:
        assert rows["openvino-bf16"]["status"] == "skipped" and rows["openvino-bf16"]["reason"] == why
    chosen = rows[record["chosen"]]
    allowed = [row for row in rows.values() if row["status"] in ("chosen", "allowed")]
    assert chosen["status"] == "chosen"
    fastest_exact = min((r for r in allowed if r["precision"] == "fp32"), key=lambda r: r["score_ms"])
    assert chosen["score_ms"] <= fastest_exact["score_ms"]  # never slower than the best fp32 runtime
    assert record["int8"]["calibration_images"] == 18 and record["int8"]["quantised_now"]
    # The guard decodes as predict_many does (the eval geometry): same images, same reference accuracy.
    done = predictor.predict_many(blob for blob, _ in _guard())
    assert done.accuracy([label for _, label in _guard()]) == record["reference_accuracy"]


def _timed(name: str, score_ms: float) -> dict:
    return {"name": name, "precision": backends.PRECISION[name], "status": "allowed", "score_ms": score_ms}


def test_the_fastest_allowed_runtime_is_chosen_and_reduced_precision_must_win_by_the_margin():
    eager, onnx, openvino = _timed("torch", 10.0), _timed("onnxruntime", 6.0), _timed("openvino-fp32", 8.0)
    chosen, why = runtime_choice.pick([eager, openvino, onnx], reference_score=10.0)
    assert chosen is onnx and why.startswith("onnxruntime: the fastest allowed runtime") and "(1.67x)" in why
    int8 = _timed("onnxruntime-int8", 5.0)  # 16.7% faster than the fastest fp32 runtime: it serves
    chosen, why = runtime_choice.pick([eager, onnx, openvino, int8], reference_score=10.0)
    assert chosen is int8 and "(2.00x)" in why
    int8["score_ms"] = 5.5  # 8.3% faster: within the margin, so the fastest fp32 runtime serves instead
    chosen, why = runtime_choice.pick([eager, onnx, openvino, int8], reference_score=10.0)
    assert chosen is onnx and "onnxruntime-int8 is allowed but less than 10% faster (5.50 vs 6.00 ms)" in why


def _black_and_white() -> bytes:
    """A picture of pure black and pure white: the extremes of the model's input range."""
    from PIL import Image

    img = Image.new("RGB", (160, 160), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 80, 160))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _input_scale(path) -> float:
    """The int8 graph's quantisation scale of the model input (per tensor: its calibrated range / 255)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    (node,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
    return float(numpy_helper.to_array(inits[node.input[1]]))


def test_int8_calibration_uses_every_batch(predictor, tmp_path):
    """32 images are 4 calibration batches of 8, and only the first holds pure white: the input's calibrated
    range is the one over all four only when every batch counts. onnxruntime's CalibMaxIntermediateOutputs
    dropped what it had collected each time its count was reached (ranges from the last batches only; at an
    exact multiple "No data is collected")."""
    blobs = [_black_and_white(), *_calibration(11)[:31]]
    made = runtime_choice.ensure_int8(predictor, blobs, tmp_path / "int8.onnx")
    assert made["calibration_images"] == 32 and backends.onnx_stamp(tmp_path / "int8.onnx") == made["stamp"]
    batches = runtime_choice.calibration_batches(predictor, blobs)
    assert len(batches) == 4

    def scale(of) -> float:  # MinMax on uint8 activations: the range, widened to hold 0, over 255 steps
        return (max(0.0, max(float(b.max()) for b in of)) - min(0.0, min(float(b.min()) for b in of))) / 255

    assert scale(batches[1:]) < 0.95 * scale(batches)  # the first batch widens the range: it must count
    assert _input_scale(tmp_path / "int8.onnx") == pytest.approx(scale(batches), rel=1e-5)


def _damage_int8(path, *, seed: int = 0) -> int:
    """Scale every int8 weight's dequantisation scale by a random factor (0.05-20x), keeping the file's stamp:
    a quantised model gone wrong that the cache would happily load."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    rng = np.random.default_rng(seed)
    damaged = 0
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].data_type == onnx.TensorProto.INT8:
            scale = inits[node.input[1]]
            values = numpy_helper.to_array(scale)
            factors = np.exp(rng.uniform(np.log(0.05), np.log(20), size=values.shape)).astype(values.dtype)
            scale.CopyFrom(numpy_helper.from_array(values * factors, scale.name))
            damaged += 1
    onnx.save(model, str(path))
    return damaged


def test_a_damaged_int8_model_is_refused_with_the_numbers_in_the_reason(predictor, tmp_path):
    path = tmp_path / "int8.onnx"
    made = runtime_choice.ensure_int8(predictor, _calibration(), path)
    assert _damage_int8(path) > 4 and backends.onnx_stamp(path) == made["stamp"]  # still looks like ours
    record = runtime_choice.choose_runtime(predictor, guard=_guard(), calibration=_calibration(), int8_path=path,
                                           candidates=("torch", "onnxruntime-int8", "openvino-int8"), rounds=1,
                                           time_refused=True)
    assert record["int8"]["quantised_now"] is False  # the damaged file itself was judged
    rows = _rows(record)
    for name in ("onnxruntime-int8", "openvino-int8"):
        if rows[name]["status"] == "skipped":  # a runtime this machine lacks
            continue
        row = rows[name]
        assert row["status"] == "refused" and row["agreement"] < 0.99, row
        assert f"{row['agreement']:.2%} of 24 val images" in row["reason"]
        assert f"{row['accuracy_delta_points']:+.2f} points" in row["reason"]
        assert row["ms_b1"] > 0  # timed all the same: the bench shows what a refusal costs
    assert record["chosen"] == "torch"


def test_without_validation_images_only_fp32_runtimes_are_allowed(predictor, tmp_path):
    record = runtime_choice.choose_runtime(predictor, guard=[], calibration=_calibration(),
                                           int8_path=tmp_path / "int8.onnx", rounds=1)
    rows = _rows(record)
    assert record["validation_images"] == 0 and backends.PRECISION[record["chosen"]] == "fp32"
    for name in REDUCED:
        if rows[name]["status"] != "skipped":
            assert rows[name]["status"] == "refused" and "no validation images" in rows[name]["reason"]


def test_a_missing_package_skips_its_candidates_with_the_reason(predictor, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what Python does when the package is not installed
    monkeypatch.setattr(backends, "_ov_core", None)
    record = runtime_choice.choose_runtime(predictor, guard=_guard(2), candidates=("torch", "openvino-fp32"),
                                           rounds=1)
    row = _rows(record)["openvino-fp32"]
    assert row["status"] == "skipped" and "openvino is not installed" in row["reason"]
    assert record["chosen"] == "torch"


def test_bf16_needs_native_support():
    assert backends.native_bf16({"flags": ["avx2", "fma"]})[0] is False
    assert "emulated" in backends.native_bf16({"flags": ["avx2", "fma"]})[1]
    assert backends.native_bf16({"flags": ["avx512f", "avx512_bf16"]}) == (True, "AVX-512 BF16")
    assert backends.native_bf16({"flags": ["amx_bf16", "amx_tile"]}) == (True, "AMX-BF16")


@pytest.mark.skipif(not backends.torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_fp16_serves_the_same_top1(predictor):
    batch = predictor.preprocess([class_image_bytes(label, 800 + i) for i in range(4) for label in LABELS])
    fp16 = backends.build("cuda-fp16", model=predictor.model)
    assert (predictor.split(fp16(batch))[0].argmax(1) == predictor.logits(batch).argmax(1)).mean() >= 0.99


def test_microbatching_gathers_concurrent_single_requests_into_one_forward(predictor):
    batcher = MicroBatcher(predictor.forward, predictor.forward_batch, window_s=0.05, max_batch=8)
    images = [predictor.preprocess([class_image_bytes(label, 900 + i)]) for i in range(2) for label in LABELS]
    alone = [predictor.forward(x) for x in images]
    start, results = threading.Barrier(len(images)), [None] * len(images)

    def one(i: int) -> None:
        start.wait()
        results[i] = batcher(images[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert batcher.images == len(images) and batcher.batches < len(images)  # some forwards carried several
    for got, expected in zip(results, alone, strict=True):
        assert np.abs(got - expected).max() < 1e-4


# --- Decided once per kind of machine, recorded on the version, reused by every process -----------------

def test_the_choice_is_recorded_on_the_version_and_reused_without_timing(characters, trained_artifacts, api_client,
                                                                        client):
    from apps.inference.loading import machine_key, predictor_cache
    from apps.inference.selectors import guard_images

    dataset = store_dataset(characters)
    version = register(trained_artifacts.v1, "timed-v1", dataset_version=dataset)
    assert len(guard_images(version)) == 36
    before = runtime_choice.measurements
    loaded = predictor_cache.get(version)
    assert runtime_choice.measurements == before + 1
    version.refresh_from_db()
    key, machine = machine_key()
    record = version.runtime_choices[key]
    assert record["machine"] == machine and record["validation_images"] == 36 and record["where"] == "first load"
    assert record["int8"]["calibration_images"] == 18  # its own training images
    assert loaded.predictor.backend_name == record["chosen"] and loaded.describe()["runtime"]["source"] == "measured"

    predictor_cache.clear()  # a restart of this process: the record is read, nothing is timed
    again = predictor_cache.get(version)
    assert runtime_choice.measurements == before + 1
    assert again.predictor.backend_name == record["chosen"] and again.describe()["runtime"]["source"] == "recorded"
    version.refresh_from_db()
    assert version.runtime_choices[key]["measured_at"] == record["measured_at"]

    # Shown in /api/v1/models and on the models page, with every candidate's figures.
    listed = {v["name"]: v for v in api_client.get("/api/v1/models").json()["versions"]}["timed-v1"]
    assert listed["runtime"]["machine"] == key and listed["runtime"]["chosen"] == record["chosen"]
    assert listed["runtime"]["choices"][key]["candidates"] == record["candidates"]
    page = client.get("/ui/models/").content.decode()
    assert f'data-runtime="{record["chosen"]}"' in page and record["why"].split(":")[0] in page
    for row in record["candidates"]:
        assert f'data-candidate="{row["name"]}" data-status="{row["status"]}"' in page


@pytest.mark.backend
def test_a_second_process_loads_the_recorded_choice_without_timing(transactional_db, characters, trained_artifacts):
    from apps.inference import services
    from apps.inference.loading import machine_key

    version = register(trained_artifacts.v1, "timed-v2", dataset_version=store_dataset(characters, "colors-v2"))
    record = services.model_version_runtime_choose(version)
    assert record["source"] == "measured"
    script = (
        "import json; from apps.ml import runtime_choice; from apps.inference.models import ModelVersion;"
        "from apps.inference.loading import predictor_cache;"
        f"loaded = predictor_cache.get(ModelVersion.objects.get(pk={version.pk}));"
        "print('RESULT', json.dumps({'measurements': runtime_choice.measurements,"
        " 'backend': loaded.predictor.backend_name, 'runtime': loaded.describe()['runtime']}))"
    )
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=180)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-3000:]
    child = json.loads(line[len("RESULT "):])
    assert child["measurements"] == 0 and child["backend"] == record["chosen"]
    assert child["runtime"] == {"chosen": record["chosen"], "key": machine_key()[0],
                                "measured_at": record["measured_at"], "source": "recorded"}


def test_registering_a_version_queues_its_measurement(characters, trained_artifacts, django_capture_on_commit_callbacks):
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    with django_capture_on_commit_callbacks(execute=True):
        version = register(trained_artifacts.v1, "queued-v1")
    broker, tasks = get_broker(), []
    while batch := broker.dequeue():  # the ORM broker's table or Redis's list, whichever the settings name
        tasks += [SignedPackage.loads(payload) for _, payload in batch]
    assert ("apps.inference.tasks.model_version_runtime_choose", (version.pk,)) in [
        (task["func"], tuple(task["args"])) for task in tasks]


def test_choose_runtime_command_prints_the_candidates(characters, trained_artifacts):
    from io import StringIO

    from django.core.management import call_command

    version = register(trained_artifacts.v1, "cmd-v1", dataset_version=store_dataset(characters, "colors-cmd"))
    out = StringIO()
    call_command("choose_runtime", "cmd-v1", stdout=out)
    version.refresh_from_db()
    (record,) = version.runtime_choices.values()
    text = out.getvalue()
    assert f"chosen: {record['why']}" in text and "36 val images" in text
    assert all(row["name"] in text for row in record["candidates"])
    out = StringIO()
    call_command("choose_runtime", "cmd-v1", "--json", stdout=out)  # recorded: printed, not measured again
    assert json.loads(out.getvalue())["measured_at"] == record["measured_at"]


def test_a_model_refit_on_train_and_val_can_be_judged_on_test(characters, trained_artifacts):
    """``--guard-split test``: the runtimes are judged on the test images (a refit model has seen val), and the
    record says so."""
    from io import StringIO

    from django.core.management import call_command

    version = register(trained_artifacts.v1, "cmd-test", dataset_version=store_dataset(characters, "colors-t", test=5))
    out = StringIO()
    call_command("choose_runtime", "cmd-test", "--guard-split", "test", "--json", stdout=out)
    record = json.loads(out.getvalue())
    assert record["validation_images"] == 15 and record["guard_split"] == "test"
    judged = [row["reason"] for row in record["candidates"] if row.get("agreement") is not None]
    assert judged and all("15 test images" in reason for reason in judged)
    version.refresh_from_db()
    assert version.runtime_choices[record["key"]]["guard_split"] == "test"
    out = StringIO()
    call_command("choose_runtime", "cmd-test", stdout=out)  # the recorded one, which says what it was judged on
    assert "15 test images" in out.getvalue()
    before = runtime_choice.measurements
    out = StringIO()
    call_command("choose_runtime", "cmd-test", "--guard-split", "val", "--json", stdout=out)  # another split: again
    record = json.loads(out.getvalue())
    assert runtime_choice.measurements == before + 1 and record["source"] == "measured"
    assert record["validation_images"] == 36 and record["guard_split"] == "val"
    call_command("choose_runtime", "cmd-test", "--guard-split", "val", stdout=StringIO())  # the same split: recorded
    assert runtime_choice.measurements == before + 1


def test_a_machine_that_lost_its_int8_graph_remakes_the_same_one_without_timing(characters, trained_artifacts):
    """The record says int8; this machine's cache lost the graph (a new disk, a cleaned cache): it is quantised
    again from the same training images, its stamp matches the record, and nothing is timed."""
    from apps.inference import services
    from apps.inference.loading import int8_graph_path, predictor_cache

    version = register(trained_artifacts.v1, "int8-v1", dataset_version=store_dataset(characters, "colors-int8"))
    record = services.model_version_runtime_choose(version)
    if _rows(record)["onnxruntime-int8"]["status"] not in ("allowed", "chosen"):
        pytest.skip(f"int8 is not allowed for this model here: {_rows(record)['onnxruntime-int8']['reason']}")
    services.model_version_runtime_record(version=version, key=record["key"],
                                          record={**record, "chosen": "onnxruntime-int8"})
    path = int8_graph_path(version.artifact_sha256)
    path.unlink()
    before = runtime_choice.measurements
    loaded = predictor_cache.get(version)
    assert runtime_choice.measurements == before
    assert loaded.predictor.backend_name == "onnxruntime-int8" and backends.onnx_stamp(path) == record["int8"]["stamp"]
    assert loaded.describe()["runtime"]["source"] == "recorded"
    version.refresh_from_db()
    assert "source" not in version.runtime_choices[record["key"]]  # how a process got it is not part of the record
