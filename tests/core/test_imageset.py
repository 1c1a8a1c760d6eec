import pytest
import torch

from whylens import ImageSet, WhylensError


def _set(n=10, k=3, masks=True):
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.rand(n, 1, 4, 5, generator=g), torch.arange(n) % k, [f"c{i}" for i in range(k)],
                    masks=(torch.rand(n, 4, 5, generator=g) > 0.5).float() if masks else None,
                    extras={"flag": torch.arange(n) % 2 == 0})


def test_indexing_keeps_everything_aligned():
    ds = _set()
    sub = ds[torch.tensor([7, 2, 5])]
    assert sub.ids == [ds.ids[7], ds.ids[2], ds.ids[5]]
    assert torch.equal(sub.images[1], ds.images[2]) and torch.equal(sub.masks[2], ds.masks[5])
    assert sub.labels.tolist() == [1, 2, 2] and sub.extras["flag"].tolist() == [False, True, False]
    assert len(ds[ds.labels == 0]) == 4 and len(ds[2:5]) == 3 and len(ds[-1]) == 1


def test_split_is_stratified_disjoint_and_deterministic():
    ds = _set(n=30)
    a, b = ds.split(0.8, seed=1)
    assert len(a) == 24 and len(b) == 6
    assert set(a.ids).isdisjoint(b.ids) and set(a.ids) | set(b.ids) == set(ds.ids)
    assert [int((b.labels == c).sum()) for c in range(3)] == [2, 2, 2]
    assert a.ids == ds.split(0.8, seed=1)[0].ids != ds.split(0.8, seed=2)[0].ids


def test_select_classes_relabels_in_given_order():
    ds = _set(n=9)
    sub = ds.select_classes(["c2", 0])
    assert sub.classes == ["c2", "c0"] and sorted(sub.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(ds.labels[int(i.split(":")[1])] == (2 if lab == 0 else 0) for i, lab in zip(sub.ids, sub.labels))


@pytest.mark.parametrize("images,labels,msg", [
    (torch.full((2, 1, 3, 3), float("nan")), [0, 1], "NaN"),
    (torch.full((2, 1, 3, 3), 2.0), [0, 1], r"\[0, 1\]"),
    (torch.rand(2, 2, 3, 3), [0, 1], "1 or 3 channels"),
    (torch.rand(2, 1, 3, 3), [0, 5], r"labels: expected values in \[0, 1\]"),
    (torch.rand(2, 1, 3, 3), [0], "labels: expected shape"),
])
def test_bad_input_is_a_one_line_error(images, labels, msg):
    with pytest.raises(WhylensError, match=msg) as exc:
        ImageSet(images, torch.tensor(labels), ["a", "b"])
    assert "\n" not in str(exc.value)
