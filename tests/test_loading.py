import numpy as np
import pytest
import torch

from codistill.data import create_reader, prepare_dataset
from codistill.data.loading import PreparedSplit, ResumableBatchSampler
from codistill.data.transforms import Augmentation, rescale_images
from tests.conftest import repo_params


def test_sampler_resumes_with_exactly_the_remaining_batches():
    full = list(ResumableBatchSampler(10, 4, seed=3, start=0, total=9))
    resumed = list(ResumableBatchSampler(10, 4, seed=3, start=5, total=9))
    assert resumed == full[5:]
    assert len(full) == 9


def test_sampler_visits_every_sample_once_per_epoch_and_reshuffles():
    batches = list(ResumableBatchSampler(8, 4, seed=0, start=0, total=4))
    epochs = [[i for b in batches[k : k + 2] for i, _ in b] for k in (0, 2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(8))
    assert epochs[0] != epochs[1]
    seeds = [s for b in batches for _, s in b]
    assert len(set(seeds)) == len(seeds)


def test_ranks_split_each_global_batch_without_overlap():
    single = list(ResumableBatchSampler(12, 4, seed=1, start=0, total=3))
    rank0 = list(ResumableBatchSampler(12, 2, seed=1, start=0, total=3, rank=0, world_size=2))
    rank1 = list(ResumableBatchSampler(12, 2, seed=1, start=0, total=3, rank=1, world_size=2))
    for whole, first, second in zip(single, rank0, rank1, strict=True):
        assert first + second == whole


def test_augmentation_is_a_function_of_the_seed_and_pads_with_ignore():
    image = torch.randn(3, 20, 30)
    labels = torch.full((20, 30), 4)
    augment = Augmentation(crop=(40, 50), scale=(1.0, 1.0), flip=True)
    a = augment(image, labels, np.random.default_rng(7))
    b = augment(image, labels, np.random.default_rng(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 40, 50) and a[1].shape == (40, 50)
    assert (a[1] == 255).sum() == 40 * 50 - 20 * 30
    assert (a[1] == 4).sum() == 20 * 30


def test_scaled_crop_keeps_labels_nearest_neighbour():
    labels = torch.arange(4).repeat_interleave(10)[None].repeat(16, 1)
    image = torch.zeros(3, 16, 40)
    _, out = Augmentation(crop=(8, 8), scale=(0.5, 2.0), flip=False)(
        image, labels, np.random.default_rng(1)
    )
    assert set(out.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_training_at_a_fixed_scale_sees_the_pixels_inference_sees():
    """Whole images at scale s in training are exactly what evaluation feeds the student."""
    image, labels = torch.randn(3, 36, 48), torch.randint(0, 11, (36, 48))
    trained, trained_labels = Augmentation(crop=(18, 24), scale=(0.5, 0.5), flip=False)(
        image, labels, np.random.default_rng(0)
    )
    assert torch.equal(trained, rescale_images(image[None], 0.5)[0])
    # at 0.5 each pixel is the mean of a 2x2 block, and each label its block's bottom-right
    assert torch.allclose(trained[:, 0, 0], image[:, :2, :2].mean(dim=(1, 2)), atol=1e-6)
    assert torch.equal(trained_labels, labels[1::2, 1::2])


def test_prepared_split_normalizes_with_dataset_statistics(camvid_tree, tmp_path):
    prepared = tmp_path / "prepared"
    prepare_dataset(create_reader("camvid", camvid_tree), prepared, repo_params().prepare)
    data = PreparedSplit(prepared, "train")
    images = torch.stack([data[i, 0][0] for i in range(len(data))])
    assert images.shape == (6, 3, 24, 32)
    # mean/std come from the source PNGs, the pixels from JPEG: close, not exact
    assert images.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert images.std(dim=(0, 2, 3)).sub(1).abs().max() < 0.05
    with pytest.raises(ValueError, match="split 'nope' has no readable samples"):
        PreparedSplit(prepared, "nope")
