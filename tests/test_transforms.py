"""Device-side batch augmentation of uint8 images."""
import torch

from lifelong.data.transforms import BatchAugment


def test_eval_only_normalises():
    aug = BatchAugment([0.5], [0.25], crop_padding=4, flip=True)
    x = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    assert torch.allclose(aug(x, train=False), torch.full((2, 1, 8, 8), 2.0))


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    torch.manual_seed(0)
    aug = BatchAugment([0.0], [1.0], crop_padding=2)
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).repeat(16, 1, 1, 1)
    out = aug.random_crop(x)
    padded = torch.nn.functional.pad(x[0], (2, 2, 2, 2))
    windows = [padded[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
    assert out.shape == x.shape
    for img in out:
        assert any(torch.equal(img, w) for w in windows)
    assert len({tuple(img.flatten().tolist()) for img in out}) > 1  # offsets differ per image


def test_flip_mirrors_about_half_the_images_and_is_seeded():
    aug = BatchAugment([0.0], [1.0], flip=True)
    x = torch.randn(400, 1, 4, 4)
    torch.manual_seed(1)
    a = aug.random_flip(x)
    torch.manual_seed(1)
    b = aug.random_flip(x)
    flipped = (a != x).flatten(1).any(1)
    assert torch.equal(a, b)
    assert torch.equal(a[flipped], x[flipped].flip(3))
    assert 120 < int(flipped.sum()) < 280
