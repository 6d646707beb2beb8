"""Per-batch mean subtraction, crops and flips (paper §3)."""
from __future__ import annotations

import pytest
import torch

from zfnet_cli.data.transforms import BatchPreprocess, ten_crop


def _arange_images(b, s):
    return (torch.arange(b * 3 * s * s) % 251).to(torch.uint8).view(b, 3, s, s)


def _random_images(b, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, s, s), generator=g, dtype=torch.uint8)


def test_eval_centre_crop_exact_values():
    images = torch.arange(48, dtype=torch.uint8).view(1, 3, 4, 4)
    out = BatchPreprocess(torch.zeros(3, 1, 1), crop=2, train=False)(images)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 2, 2)
    assert torch.equal(out[0, 0], torch.tensor([[5.0, 6.0], [9.0, 10.0]]))
    assert torch.equal(out[0, 2], torch.tensor([[37.0, 38.0], [41.0, 42.0]]))


def test_eval_is_deterministic_and_ignores_the_generator():
    images = _random_images(4, 9)
    pre = BatchPreprocess(torch.zeros(3, 9, 9), crop=5, train=False)
    a = pre(images, torch.Generator().manual_seed(0))
    b = pre(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(a, images[:, :, 2:7, 2:7].float())


def test_mean_subtraction_per_pixel_and_per_channel():
    images = _arange_images(2, 8)
    pixel_mean = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    out = BatchPreprocess(pixel_mean, crop=4, train=False)(images)
    expected = images[:, :, 2:6, 2:6].float() - pixel_mean[:, 2:6, 2:6]
    assert torch.equal(out, expected)

    flat = torch.full((2, 3, 6, 6), 128, dtype=torch.uint8)
    channel_mean = torch.tensor([128.0, 100.0, 200.0]).view(3, 1, 1)
    out = BatchPreprocess(channel_mean, crop=6, train=True)(flat)
    assert torch.equal(out[:, 0], torch.zeros(2, 6, 6))
    assert torch.equal(out[:, 1], torch.full((2, 6, 6), 28.0))
    assert torch.equal(out[:, 2], torch.full((2, 6, 6), -72.0))


def test_train_crops_are_true_sub_windows_of_the_input():
    s, c, b = 12, 7, 24
    images = _random_images(b, s)
    mean = torch.rand(3, s, s, generator=torch.Generator().manual_seed(1)) * 255
    out = BatchPreprocess(mean, crop=c, train=True)(images, torch.Generator().manual_seed(3))
    assert out.shape == (b, 3, c, c) and out.dtype == torch.float32
    centred = images.float() - mean  # the paper: subtract, then crop and maybe flip
    seen = set()
    for n in range(b):
        matches = [(y, x, f) for y in range(s - c + 1) for x in range(s - c + 1) for f in (0, 1)
                   if torch.equal(out[n], (lambda w: w.flip(-1) if f else w)(
                       centred[n, :, y:y + c, x:x + c]))]
        assert len(matches) == 1, f"image {n}: {len(matches)} matching windows"
        seen.add(matches[0])
    assert len(seen) > b // 2  # offsets differ from image to image


def test_train_draws_are_reproducible_and_follow_the_generator():
    images = _random_images(16, 10)
    pre = BatchPreprocess(torch.zeros(3, 10, 10), crop=6, train=True)
    a = pre(images, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG must not matter when a generator is given
    b = pre(images, torch.Generator().manual_seed(7))
    c = pre(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)

    oy, ox, flipped = pre.draw(1000, 10, 10, torch.Generator().manual_seed(0))
    assert set(oy.tolist()) == set(range(5)) and set(ox.tolist()) == set(range(5))
    assert flipped.dtype == torch.bool


def test_flips_happen_about_half_the_time():
    b, s = 2000, 4
    images = _arange_images(1, s).expand(b, 3, s, s).contiguous()  # crop = S: only flips vary
    mean = torch.zeros(3, s, s)
    out = BatchPreprocess(mean, crop=s, train=True)(images, torch.Generator().manual_seed(0))
    plain, mirrored = images[0].float(), images[0].float().flip(-1)
    is_plain = (out == plain).flatten(1).all(1)
    is_mirrored = (out == mirrored).flatten(1).all(1)
    assert torch.all(is_plain ^ is_mirrored)
    assert 0.45 < is_mirrored.float().mean().item() < 0.55

    no_flip = BatchPreprocess(mean, crop=s, train=True, flip=False)
    assert torch.equal(no_flip(images, torch.Generator().manual_seed(0)), plain.expand(b, 3, s, s))


def test_ten_crop_order_and_contents():
    s, c = 6, 4
    images = _arange_images(2, s)
    mean = torch.rand(3, s, s, generator=torch.Generator().manual_seed(0)) * 255
    out = ten_crop(images, mean, c)
    assert out.shape == (2, 10, 3, c, c) and out.dtype == torch.float32
    x = images.float() - mean
    corners = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]  # TL, TR, BL, BR, centre
    for k, (t, l) in enumerate(corners):
        assert torch.equal(out[:, k], x[:, :, t:t + c, l:l + c]), f"view {k}"
        assert torch.equal(out[:, 5 + k], x[:, :, t:t + c, l:l + c].flip(-1)), f"view {5 + k}"
    # literal check of view 1 (top-right) of image 0, channel 0, with a zero mean
    literal = ten_crop(images[:1], torch.zeros(3, 1, 1), c)[0, 1, 0]
    assert torch.equal(literal, torch.tensor([[2., 3, 4, 5], [8, 9, 10, 11],
                                              [14, 15, 16, 17], [20, 21, 22, 23]]))
    # the centre view is what eval-mode BatchPreprocess returns
    assert torch.equal(out[:, 4], BatchPreprocess(mean, crop=c, train=False)(images))


def test_bad_shapes_name_the_shapes():
    pre = BatchPreprocess(torch.zeros(3, 8, 8), crop=4, train=True)
    with pytest.raises(AssertionError, match=r"mean \(3, 8, 8\).*\(2, 3, 6, 6\)"):
        pre(torch.zeros(2, 3, 6, 6, dtype=torch.uint8))
    with pytest.raises(AssertionError, match="uint8"):
        pre(torch.zeros(2, 3, 8, 8))
    with pytest.raises(AssertionError, match="crop 10 larger"):
        BatchPreprocess(torch.zeros(3, 1, 1), crop=10, train=False)(
            torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_same_crops_on_cpu_and_gpu():
    images = _random_images(8, 16)
    mean = torch.rand(3, 16, 16) * 255
    pre = BatchPreprocess(mean, crop=11, train=True)
    cpu = pre(images, torch.Generator().manual_seed(5))
    gpu = pre(images.cuda(), torch.Generator().manual_seed(5))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


def test_scale_multiplies_the_centred_values():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    mean = torch.rand(3, 8, 8) * 255
    for train in (False, True):
        a = BatchPreprocess(mean, crop=6, train=train)(images, torch.Generator().manual_seed(0))
        b = BatchPreprocess(mean, crop=6, train=train, scale=0.25)(images, torch.Generator().manual_seed(0))
        torch.testing.assert_close(b, a * 0.25)


def test_full_size_train_path_equals_the_gather():
    """crop == size takes a shortcut (no offsets to apply); it must give what the general
    gather gives for the same draws."""
    images = torch.randint(0, 256, (16, 3, 6, 6), dtype=torch.uint8)
    mean = torch.rand(3, 6, 6) * 255
    pre = BatchPreprocess(mean, crop=6, train=True)
    fast = pre(images, torch.Generator().manual_seed(5))
    oy, ox, flipped = pre.draw(16, 6, 6, torch.Generator().manual_seed(5))
    assert oy.eq(0).all() and ox.eq(0).all() and flipped.any() and not flipped.all()
    ref = images.float() - mean
    ref[flipped] = ref[flipped].flip(-1)
    assert torch.equal(fast, ref)


def test_ten_crop_preprocess_is_ten_crop_times_scale():
    images = _random_images(3, 10)
    mean = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(2)) * 255
    out = BatchPreprocess(mean, crop=7, train=False, scale=0.5, crops=10)(images)
    assert out.shape == (3, 10, 3, 7, 7)
    torch.testing.assert_close(out, ten_crop(images, mean, 7) * 0.5)
    with pytest.raises(ValueError, match="crops must be 1 or 10"):
        BatchPreprocess(mean, crop=7, train=False, crops=5)
    with pytest.raises(ValueError, match="evaluation only"):
        BatchPreprocess(mean, crop=7, train=True, crops=10)


def test_per_channel_scale_multiplies_each_channel():
    images = _random_images(2, 8)
    mean = torch.rand(3, 8, 8) * 255
    factors = torch.tensor([0.5, 2.0, -1.0])
    for crops in (1, 10):
        plain = BatchPreprocess(mean, crop=6, train=False, crops=crops)(images)
        scaled = BatchPreprocess(mean, crop=6, train=False, crops=crops, scale=factors.view(3, 1, 1))(images)
        torch.testing.assert_close(scaled, plain * factors.view(3, 1, 1))
    one = BatchPreprocess(mean, crop=6, train=True, scale=torch.tensor(0.25))
    torch.testing.assert_close(one(images, torch.Generator().manual_seed(0)),
                               BatchPreprocess(mean, crop=6, train=True)(images, torch.Generator().manual_seed(0)) * 0.25)


@pytest.mark.parametrize("per_pixel", [True, False])
def test_cpu_crop_loop_equals_the_gather_bit_for_bit(per_pixel):
    """The CPU path (a numpy subtraction per image) and the GPU path (one gather) give the same
    float32 numbers for the same draws, flipped or not, at every offset including 0 and the
    last one."""
    from zfnet_cli.data.transforms import _crop_flip_cpu, _crop_flip_gather

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 9, 9), generator=g, dtype=torch.uint8)
    mean = torch.rand(3, 9, 9, generator=g) * 255 if per_pixel else torch.rand(3, 1, 1) * 255
    oy = torch.tensor([0, 4, 2, 0, 4, 1])
    ox = torch.tensor([0, 4, 1, 4, 0, 3])
    flipped = torch.tensor([False, True, True, True, False, False])
    a = _crop_flip_cpu(images, mean, 5, oy, ox, flipped)
    b = _crop_flip_gather(images, mean, 5, oy, ox, flipped)
    assert torch.equal(a, b)
    # and by hand: image 3, flipped, window rows 0..4, columns 4..8 read right to left
    expected = images[3, :, 0:5, 4:9].flip(-1).float() - (mean[:, 0:5, 4:9].flip(-1) if per_pixel else mean)
    assert torch.equal(a[3], expected)


def test_ranks_read_only_their_images_and_together_equal_one_process():
    """InMemoryBatches under 2 ranks: each reads only its slice of the global batch (what lets
    each machine page in only its share of a memory-mapped pack), and rank r's batch equals the
    one-process batch's rows r::2, random crops and flips included."""
    from zfnet_cli.engine import InMemoryBatches, epoch_generator

    images = torch.randint(0, 256, (10, 3, 12, 12), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    labels = torch.arange(10)
    mean = torch.rand(3, 12, 12) * 255

    class Recording:  # what a pack's .images sees
        def __init__(self):
            self.read = []

        def __getitem__(self, idx):
            self.read += idx.tolist()
            return images[idx]

    def batches(rank, world, store):
        pre = BatchPreprocess(mean, 8, train=True)
        return list(InMemoryBatches(store, labels, 6, pre, shuffle=True,
                                    generator=epoch_generator(0, 3), rank=rank, world=world))

    one = batches(0, 1, images)
    stores = [Recording(), Recording()]
    per_rank = [batches(r, 2, stores[r]) for r in (0, 1)]
    for step, (x, y) in enumerate(one):
        for r in (0, 1):
            xr, yr = per_rank[r][step]
            assert torch.equal(xr, x[r::2]) and torch.equal(yr, y[r::2])
    assert sorted(stores[0].read + stores[1].read) == list(range(10))  # each image once in all
    assert not set(stores[0].read) & set(stores[1].read)


def test_one_batching_helper_for_data_in_memory_and_in_files():
    """engine.dataset_batches gives the same images, labels and data-set indices whether a data
    set is held in memory or read item by item as files are (an unreadable one skipped and
    named), for the first n images, as stored (no preprocess) or preprocessed, and under 2
    ranks each image once in all."""
    from zfnet_cli.data.images import ImageError, UnreadableFiles
    from zfnet_cli.engine import InMemoryBatches, LoaderBatches, dataset_batches

    images = torch.randint(0, 256, (10, 3, 6, 6), generator=torch.Generator().manual_seed(2),
                           dtype=torch.uint8)
    labels = torch.arange(10) + 100

    class Memory:
        pass
    memory = Memory()
    memory.images, memory.labels = images, labels

    class Files:  # read one item at a time; item 3 is a damaged file
        def __len__(self):
            return 10

        def __getitem__(self, i):
            if i == 3:
                raise ImageError("f3: damaged", path="f3", reason="damaged")
            return images[i], int(labels[i])

    def scan(dataset, pre=None, rank=0, world=1, unreadable=None):
        src = dataset_batches(dataset, 4, pre, first=7, rank=rank, world=world, workers=0,
                              unreadable=UnreadableFiles(10, 0.5) if unreadable is None
                              else unreadable)
        got = list(src.batches_with_indices())
        return src, (torch.cat([x for x, _, _ in got]), torch.cat([y for _, y, _ in got]),
                     torch.cat([torch.as_tensor(i) for _, _, i in got]).tolist())

    src, (x, y, idx) = scan(memory)
    assert isinstance(src, InMemoryBatches) and idx == list(range(7))
    assert torch.equal(x, images[:7]) and torch.equal(y, labels[:7])
    bad = UnreadableFiles(10, 0.5)
    src, (x, y, idx) = scan(Files(), unreadable=bad)
    assert isinstance(src, LoaderBatches) and idx == [0, 1, 2, 4, 5, 6]
    assert torch.equal(x, images[idx]) and torch.equal(y, labels[idx])
    assert list(bad.files) == ["f3"]

    def halve(x, generator=None):
        return x.float() / 2
    for dataset, readable in ((memory, list(range(7))), (Files(), [0, 1, 2, 4, 5, 6])):
        ranks = [scan(dataset, halve, rank=r, world=2)[1] for r in (0, 1)]
        assert sorted(ranks[0][2] + ranks[1][2]) == readable
        for x, _, idx in ranks:
            assert torch.equal(x, images[idx].float() / 2)
