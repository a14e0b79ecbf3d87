import io

import torch
from PIL import Image

from apps.ml.config import TrainConfig
from apps.ml.data import CachedImageDataset, EpochSampler, Sample, build_cache, decode_to_tensor
from apps.ml.images import resize_size
from apps.ml.transforms import BatchAugment, EvalCrop, TrainCrop

from .images import class_image_bytes


def _encoded(size, fmt="JPEG", mode="RGB", color=(10, 200, 30)):
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format=fmt)
    return out.getvalue()


def test_decode_scales_the_short_side_and_keeps_the_aspect():
    img = decode_to_tensor(_encoded((400, 200)), 64)
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 128)
    small = decode_to_tensor(_encoded((30, 20), fmt="PNG"), 64)  # sprites are upscaled
    assert small.shape[1] == 64


def test_transparency_becomes_white_not_black():
    img = decode_to_tensor(_encoded((40, 40), fmt="PNG", mode="RGBA", color=(0, 0, 0, 0)), 32)
    assert int(img.min()) == 255


def test_cache_is_written_once_and_reused(tmp_path):
    calls = []

    def reader(data):
        def read():
            calls.append(1)
            return data
        return read

    samples = [Sample(f"k{i}", i % 2, reader(class_image_bytes(i % 2, i))) for i in range(4)]
    first = build_cache(samples, 36, cache_dir=tmp_path)
    again = build_cache(samples, 36, cache_dir=tmp_path)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.pt"))) == 1
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    build_cache(samples, 40, cache_dir=tmp_path)  # another size is another cache
    assert len(calls) == 8


def test_an_undecodable_image_is_named_in_the_error():
    samples = [Sample("images/ab/cd/broken.png", 0, lambda: b"not an image")]
    try:
        build_cache(samples, 32)
    except Exception as exc:  # noqa: BLE001
        assert "images/ab/cd/broken.png" in str(exc)
    else:
        raise AssertionError("a broken image must fail the run")


def test_sampler_is_seeded_per_epoch_and_shards_cover_every_index():
    a = EpochSampler(10, shuffle=True, seed=3)
    a.set_epoch(1)
    first = [i for i, _ in a]
    a.set_epoch(2)
    assert [i for i, _ in a] != first
    a.set_epoch(1)
    assert [i for i, _ in a] == first
    shards = []
    for rank in (0, 1):
        s = EpochSampler(11, shuffle=True, seed=3, rank=rank, world_size=2, pad=True)
        s.set_epoch(1)
        shards.append([i for i, _ in s])
    assert len(shards[0]) == len(shards[1]) == 6 and set(shards[0]) | set(shards[1]) == set(range(11))
    unpadded = [EpochSampler(11, shuffle=False, rank=r, world_size=2, pad=False) for r in (0, 1)]
    assert sorted(i for s in unpadded for i, _ in s) == list(range(11))


def test_train_crop_and_augment_are_deterministic_per_seed_and_epoch():
    images = [decode_to_tensor(class_image_bytes(0, i), resize_size(32)) for i in range(4)]
    ds = CachedImageDataset(images, [0] * 4, TrainCrop(0.5), seed=1)
    assert torch.equal(ds[(2, 5)][0], ds[(2, 5)][0])
    assert ds[(2, 5)][0].shape == (3, resize_size(32), resize_size(32))
    augment = BatchAugment(TrainConfig(), 32, (0.5,) * 3, (0.25,) * 3, device=torch.device("cpu"))
    batch = torch.stack([ds[(i, 1)][0] for i in range(4)])
    augment.set_epoch(1)
    out = augment(batch, step=0)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, augment(batch, step=0))
    assert not torch.equal(out, augment(batch, step=1))


def test_eval_crop_is_the_central_square():
    img = torch.arange(3 * 40 * 50, dtype=torch.int32).reshape(3, 40, 50).to(torch.uint8)
    out = EvalCrop(32)(img)
    assert out.shape == (3, 32, 32) and torch.equal(out, img[:, 4:36, 9:41])
