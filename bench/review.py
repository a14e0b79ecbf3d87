"""A person's time per 100 reviewed images, with and without the model's suggestions: a scripted review in
the browser, counting wall time and keystrokes.

    .venv/bin/python bench/review.py [--images 100] [--characters 2000] [--json]

Everything is built on 127.0.0.1 in a throwaway KYARA_DATA_DIR (SQLite, local media), nothing reaches
the internet: ``--characters`` characters with generated names (the type-ahead searches among all of
them), a tiny model (the inference tests' three colour characters, fitted in about a second), a staff
user, and, per run, ``--images`` unlabelled pending images (as Waifu.pics brings them): 80% show one of the
model's three characters, 20% one of the others, which the model cannot know. Debian's Chromium (headless)
then labels every image with the keyboard on /ui/review/:

- without suggestions (first, before any model is promoted, as on a fresh installation): ``/``, the
  shortest prefix of the character's name whose first search result is that character, Enter;
- with suggestions (the model promoted and its verdicts computed): ``1`` when suggestion 1 is right,
  else the type-ahead as above.

"wall" is the scripted reviewer's time, which has no thinking in it: what the page and the server cost.
"person" adds a keystroke-level model's estimate (Card, Moran & Newell): 0.28 s a keystroke, 1.35 s to
look at an image and decide, and 1.35 s more to recall a name before typing it. At the end every image
must be approved with its true character (the bench fails otherwise).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import setup  # noqa: E402 - the same throwaway KYARA_DATA_DIR and migrate

MAX_IMAGES = 500  # per run: a bench, not a soak test
MAX_CHARACTERS = 50_000
KNOWN_SHARE = 0.8  # images showing one of the model's characters
KEYSTROKE_S, DECIDE_S, RECALL_S = 0.28, 1.35, 1.35  # keystroke-level model: K, and M for deciding and recalling
SYLLABLES = ("a ka ki ku ke ko sa shi su se so ta chi tsu te to na ni nu ne no ha hi fu he ho ma mi mu me mo "
             "ya yu yo ra ri ru re ro wa n ga gi go za ji zu da de do ba bi bu be bo pa pi po").split()


def word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables))


def make_characters(count: int, rng: random.Random) -> list:
    """The model's three colour characters and ``count`` others with distinct generated names in 40 series."""
    from apps.characters.models import Character, Series
    from tests.inference.conftest import CLASSES

    colors = Series.objects.create(slug="colors", name="Colors")
    Character.objects.bulk_create([Character(series=colors, slug=slug, name=name)
                                   for slug, (name, _rgb) in CLASSES.items()])
    series = Series.objects.bulk_create([Series(slug=f"series-{i}", name=f"{word(rng, 3).title()} Chronicles {i}")
                                         for i in range(40)])
    names, rows = set(), []
    while len(rows) < count:
        first, last = word(rng, rng.randint(2, 3)), word(rng, rng.randint(2, 4))
        name = f"{first.title()} {last.title()}"
        if name in names or len(first) < 3:
            continue
        names.add(name)
        home = series[len(rows) % len(series)]
        rows.append(Character(series=home, slug=f"{home.slug}_{first}_{last}", name=name))
    return Character.objects.bulk_create(rows, batch_size=1000)


def promote_tiny_model():
    """A ``simple`` CNN fitted on the three colour characters (the inference tests' recipe), saved under the
    (throwaway) artifacts folder and promoted to ``default`` through the platform's services."""
    import torch
    from django.conf import settings

    from apps.inference.services import model_alias_set, model_version_register
    from apps.ml.architectures import architectures
    from apps.ml.artifacts import save_serving_artifact
    from tests.inference.conftest import LABELS, _train

    arch = architectures.get("simple")
    torch.manual_seed(0)
    model = arch.build(len(LABELS), weights="none")
    _train(model, steps=150, seed=0)
    common = {"architecture": "simple", "labels": LABELS, "input_size": arch.input_size,
              "normalization": arch.normalization}
    path = save_serving_artifact(Path(settings.ARTIFACTS_DIR) / "bench-review.pt", model=model, **common)
    version = model_version_register(name="bench-review-v1", artifact=path, metrics={}, **common)
    model_alias_set(name="default", version=version, why="bench/review.py")
    return version


def make_images(count: int, others: list, rng: random.Random, seed: int) -> dict[int, str]:
    """``count`` unlabelled pending images; returns image id → the character it truly shows."""
    from apps.characters.services import image_ingest
    from tests.conftest import make_image_bytes
    from tests.inference.conftest import LABELS, class_image_bytes

    truth = {}
    for n in range(seed, seed + count):
        if rng.random() < KNOWN_SHARE:
            slug = rng.choice(LABELS)
            data = class_image_bytes(slug, n)
        else:
            slug = rng.choice(others).slug
            data = make_image_bytes(n, size=(128, 128), fmt="JPEG", quality=90)
        result = image_ingest(data=data, source_kind="crawl", source_site="waifu_pics", status="pending",
                              near_duplicate_policy="skip")
        assert result.outcome == "new", result.message
        truth[result.image.pk] = slug
    return truth


def shortest_prefixes(client, slugs: set[str]) -> dict[str, str]:
    """Per character, the shortest start of its name whose first type-ahead answer is that character (what
    a person who knows the name types before Enter), asked of the same API the page asks."""
    from apps.characters.models import Character

    prefixes = {}
    for character in Character.objects.filter(slug__in=slugs):
        for end in range(1, len(character.name) + 1):
            text = character.name[:end]
            found = client.get("/api/v1/characters/", {"search": text, "limit": 1}).json()["results"]
            if text[-1] != " " and found and found[0]["slug"] == character.slug:
                prefixes[character.slug] = text
                break
        else:
            raise SystemExit(f"the type-ahead never puts {character.slug} first")
    return prefixes


def review(session, truth: dict[int, str], prefixes: dict[str, str]) -> dict:
    """Label every image with the keyboard: ``1`` when suggestion 1 is right, else ``/`` + prefix + Enter."""
    page = session.open("/ui/review/")
    start = time.perf_counter()
    keys = typed = 0
    for _ in range(len(truth)):
        page.wait_for_selector(".review-card.current")
        image_id, first = page.evaluate("""() => {
            const card = document.querySelector('.review-card.current');
            const name = card.querySelector('.suggestion .name');
            return [Number(card.dataset.image), name ? name.title : null];
        }""")
        want = truth[image_id]
        if first == want:
            page.keyboard.press("1")
            keys += 1
        else:
            page.keyboard.press("/")
            page.keyboard.type(prefixes[want])
            page.keyboard.press("Enter")
            keys += 2 + len(prefixes[want])
            typed += 1
        page.wait_for_selector(f".review-card[data-image='{image_id}']", state="detached")
    page.wait_for_function("() => document.getElementById('review-sync').textContent === 'all decisions saved'",
                           timeout=60_000)
    wall = time.perf_counter() - start
    session.assert_no_js_errors()
    return {"images": len(truth), "wall_s": round(wall, 2), "keystrokes": keys, "type_ahead": typed,
            "person_s": round(len(truth) * DECIDE_S + typed * RECALL_S + keys * KEYSTROKE_S, 1)}


def check(truth: dict[int, str]) -> None:
    from apps.characters.models import Image

    wrong = [(pk, status, slug, truth[pk]) for pk, status, slug in
             Image.objects.filter(pk__in=list(truth)).values_list("pk", "status", "character__slug")
             if status != "approved" or slug != truth[pk]]
    if wrong:
        raise SystemExit(f"{len(wrong)} image(s) not approved with their character, e.g. {wrong[:5]}")


def per_100(row: dict) -> dict:
    scale = 100 / row["images"]
    return {"wall_s": round(row["wall_s"] * scale, 1), "keystrokes": round(row["keystrokes"] * scale),
            "type_ahead": round(row["type_ahead"] * scale), "person_s": round(row["person_s"] * scale)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100, help=f"images per run (1-{MAX_IMAGES})")
    parser.add_argument("--characters", type=int, default=2000, help="characters the type-ahead searches")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not 1 <= args.images <= MAX_IMAGES or not 1 <= args.characters <= MAX_CHARACTERS:
        parser.error(f"--images 1..{MAX_IMAGES}, --characters 1..{MAX_CHARACTERS}")
    # Eager PyTorch and no alias watcher thread; the ORM is used beside Playwright's event loop (one thread).
    os.environ.update(KYARA_INFERENCE_BACKEND="torch", KYARA_ALIAS_WATCH_SECONDS="0", DJANGO_ALLOW_ASYNC_UNSAFE="true")

    with tempfile.TemporaryDirectory(prefix="kyara-bench-review-") as data_dir:
        setup(data_dir)
        from django.contrib.auth import get_user_model
        from django.contrib.staticfiles.handlers import StaticFilesHandler
        from django.test import Client
        from django.test.testcases import LiveServerThread
        from playwright.sync_api import sync_playwright

        from apps.review.services import suggestions_compute
        from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, Session

        rng = random.Random(0)
        others = make_characters(args.characters, rng)
        staff = get_user_model().objects.create_user("bench-reviewer", password="unused", is_staff=True)
        api = Client(HTTP_HOST="127.0.0.1")
        api.force_login(staff)
        server = LiveServerThread("127.0.0.1", StaticFilesHandler)  # static files from the apps, as runserver
        server.daemon = True
        server.start()
        server.is_ready.wait()
        if server.error:
            raise server.error
        live = SimpleNamespace(url=f"http://127.0.0.1:{server.port}")
        results = {}
        try:
            with sync_playwright() as playwright:
                chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    for run, suggested in (("without suggestions", False), ("with suggestions", True)):
                        if suggested:
                            promote_tiny_model()
                        truth = make_images(args.images, others, rng, seed=10_000 if suggested else 0)
                        if suggested:
                            done = suggestions_compute(image_ids=list(truth))
                            assert done["suggested"] == len(truth), done
                        prefixes = shortest_prefixes(api, set(truth.values()))
                        session = Session(chromium, live, user=staff)
                        results[run] = review(session, truth, prefixes)
                        session.context.close()
                        check(truth)
                finally:
                    chromium.close()
        finally:
            server.terminate()

    if args.json:
        print(json.dumps({"characters": args.characters + 3, **results}, indent=2))
        return
    print(f"Review of {args.images} unlabelled images per run ({KNOWN_SHARE:.0%} of the model's 3 characters), "
          f"type-ahead over {args.characters + 3} characters; per 100 images:")
    print(f"{'':22}{'wall s':>8}{'keys':>7}{'type-ahead':>12}{'person s (KLM)':>16}")
    for run, row in results.items():
        scaled = per_100(row)
        print(f"{run:22}{scaled['wall_s']:>8}{scaled['keystrokes']:>7}{scaled['type_ahead']:>12}{scaled['person_s']:>16}")


if __name__ == "__main__":
    main()
