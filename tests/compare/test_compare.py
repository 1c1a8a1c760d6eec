"""Koh & Liang (2017) 5.1 on digits 1 vs 7: does the RBF SVM learn from pixel-similar images, the CNN not?

Every test prints the table of measured numbers. The three measures are those of
:mod:`whylens.compare`: ``spearman`` (|influence| vs pixel similarity over all training images),
``same_label`` and ``nearest_overlap`` (of the k = 8 most helpful training images).
"""

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from whylens import compare as C
from whylens.cli import main
from whylens.data.sources import load_source
from whylens.errors import WhylensError
from whylens.models import load_model
from whylens.report.images import is_png


@pytest.fixture(scope="module")
def svm_vs_cnn(svm_1v7, cnn_1v7, ones_sevens):
    tr, te = ones_sevens
    return C.compare_models({"svm": (svm_1v7[0], svm_1v7[1]["l2"]), "cnn": (cnn_1v7[0], cnn_1v7[1]["l2"])},
                          tr, te, k=8, n_test=30)


def test_svm_learns_from_pixel_neighbours_the_cnn_does_not(svm_vs_cnn, tmp_path):
    res = svm_vs_cnn
    print("\n" + C.format_table(res.table()))
    svm, cnn = res.models["svm"].summary(), res.models["cnn"].summary()
    paths = C.save_comparison(res, tmp_path)
    print(f"figure: {paths['png']}")
    assert is_png(paths["png"].read_bytes())
    assert (svm["params"], cnn["params"]) == ("all", "fc")
    assert svm["accuracy"] > 0.95 and cnn["accuracy"] > 0.95
    # the seed's claim, on Spearman: |influence| follows pixel similarity more for the SVM (measured 0.22 vs 0.12)
    assert svm["spearman"] > cnn["spearman"]
    assert svm["spearman"] > 0.1
    # ... and on the top-k: the SVM's most helpful images are its pixel-space nearest neighbours
    # several times as often (measured 0.21 vs 0.08; chance 8/252 = 0.03)
    assert svm["nearest_overlap"] > 2 * cnn["nearest_overlap"]
    # the CNN's helpful images share the test image's class at least as often (measured 1.00 vs 0.87)
    assert cnn["same_label"] >= svm["same_label"]
    assert cnn["same_label"] > 0.9


def test_with_a_tanh_cnn_only_the_top_k_claim_holds(svm_1v7, tanh_cnn_1v7, ones_sevens):
    """Measured on this split: a tanh CNN's |influence| correlates with pixel similarity MORE than the
    SVM's (Spearman 0.35 vs 0.22), while its most helpful images are still rarely pixel neighbours."""
    tr, te = ones_sevens
    res = C.compare_models({"svm": (svm_1v7[0], svm_1v7[1]["l2"]),
                          "cnn-tanh": (tanh_cnn_1v7[0], tanh_cnn_1v7[1]["l2"])}, tr, te, k=8, n_test=30)
    print("\n" + C.format_table(res.table()))
    svm, cnn = res.models["svm"].summary(), res.models["cnn-tanh"].summary()
    assert cnn["accuracy"] > 0.95
    assert svm["nearest_overlap"] > 2 * cnn["nearest_overlap"]
    if not svm["spearman"] > cnn["spearman"]:
        pytest.xfail(f"Koh & Liang's Spearman claim does not hold against a tanh CNN on digits 1 vs 7: "
                     f"SVM {svm['spearman']:.3f} <= CNN {cnn['spearman']:.3f} (top-k nearest overlap "
                     f"{svm['nearest_overlap']:.2f} vs {cnn['nearest_overlap']:.2f} does hold)")


def test_measures_match_brute_force(svm_vs_cnn):
    res = svm_vs_cnn
    tr, te = res.train, res.test
    assert res.test_indices == C.pick_test_indices(109, 30) and len(te) == 30
    assert res.test_indices[0] == 0 and res.test_indices[-1] == 108
    X = tr.images.flatten(1).double().numpy()
    for m in res.models.values():
        for i in (0, 7, 29):
            x = te.images[i].flatten().double().numpy()
            dist = np.sqrt(((X - x) ** 2).sum(1))
            s = m.scores[i].numpy()
            rho = spearmanr(np.abs(s), -dist).statistic
            assert m.spearman[i].item() == pytest.approx(rho, abs=1e-12)
            # the RBF kernel value ranks exactly like the negative distance
            assert spearmanr(np.abs(s), np.exp(-res.gamma * dist**2)).statistic == pytest.approx(rho, abs=1e-12)
            helpful = np.argsort(s)[:8]          # most negative I_up,loss = most helpful
            assert sorted(m.top[i].helpful.indices) == sorted(helpful.tolist())
            assert m.same_label[i].item() == pytest.approx(np.mean(tr.labels.numpy()[helpful] == int(te.labels[i])))
            nearest = set(np.argsort(dist)[:8].tolist())
            assert m.nearest_overlap[i].item() == pytest.approx(len(nearest & set(helpful.tolist())) / 8)
            top = m.top[i]
            assert top.helpful.scores[0] < 0 < top.harmful.scores[0]
            assert max(top.helpful.scores) <= min(top.harmful.scores)
    json.dumps(res.to_dict())  # JSON-ready


def test_rbf_and_euclidean_give_the_same_spearman(svm_1v7, ones_sevens):
    tr, te = ones_sevens
    models = {"svm": (svm_1v7[0], svm_1v7[1]["l2"])}
    a = C.compare_models(models, tr, te, k=4, test_indices=[3, 50], similarity="rbf")
    b = C.compare_models(models, tr, te, k=4, test_indices=[3, 50], similarity="euclidean")
    assert a.gamma == svm_1v7[0].gamma  # the SVM's own kernel width
    assert torch.equal(a.models["svm"].spearman, b.models["svm"].spearman)
    d2 = torch.cdist(te.images[[3, 50]].flatten(1).double(), tr.images.flatten(1).double()) ** 2
    assert torch.allclose(a.similarity_values, torch.exp(-a.gamma * d2))
    assert torch.allclose(b.similarity_values, -d2.sqrt())
    assert C.default_rows(torch.tensor([1, 1, 1, 0, 0, 1])) == [0, 3, 4]  # class 0: 3, class 1: 0, class 0: 4
    assert C.default_rows(torch.tensor([1, 1])) == [0, 1]
    fig = C.comparison_figure(a, rows=[1], k=2)
    assert len(fig.axes) == 1 + 2 * 2
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_solver_choice_and_bad_input(svm_1v7, cnn_1v7, ones_sevens):
    tr, te = ones_sevens
    svm, cnn = svm_1v7[0], cnn_1v7[0]
    assert C.influence_options(svm) == {"solver": "exact", "params": None}
    assert C.influence_options(cnn) == {"solver": "exact", "params": ["fc"]}
    assert C.influence_options(cnn, "ekfac") == {"solver": "ekfac", "params": None}
    with pytest.raises(WhylensError, match="models"):
        C.compare_models({"svm": svm}, tr, te)
    with pytest.raises(WhylensError, match="l2"):
        C.compare_models({"svm": (svm, -1.0)}, tr, te)
    with pytest.raises(WhylensError, match="similarity"):
        C.compare_models({"svm": (svm, 1e-3)}, tr, te, similarity="cosine")
    with pytest.raises(WhylensError, match="test_indices"):
        C.compare_models({"svm": (svm, 1e-3)}, tr, te, test_indices=[500])
    with pytest.raises(WhylensError, match="k: expected"):
        C.compare_models({"svm": (svm, 1e-3)}, tr, te, k=0)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys):
    svm_dir, cnn_dir, out = tmp_path / "svm", tmp_path / "cnn", tmp_path / "cmp"
    assert main(["train", "--data", "digits:1,7", "--model", "svm", "--out", str(svm_dir), "--no-progress"]) == 0
    assert main(["train", "--data", "digits:1,7", "--model", "cnn", "--out", str(cnn_dir), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", "--models", str(svm_dir), str(cnn_dir), "--data", "digits:1,7", "--out", str(out),
                 "--k", "5", "--test-count", "20", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "spearman" in printed and "svm" in printed and "cnn" in printed
    for name in ("comparison.png", "comparison.json", "comparison.csv"):
        assert (out / name).is_file(), name
    assert is_png((out / "comparison.png").read_bytes())
    saved = json.loads((out / "comparison.json").read_text())
    # the library call on the saved models gives the same numbers
    splits = load_source("digits:1,7")
    models = {}
    for name, d in (("svm", svm_dir), ("cnn", cnn_dir)):
        model, config = load_model(d)
        models[name] = (model, config["training"]["l2"])
    res = C.compare_models(models, splits["train"], splits["test"], k=5, n_test=20)
    assert saved["k"] == 5 and saved["test_indices"] == res.test_indices and len(res.test_indices) == 20
    for row, lib in zip(saved["table"], res.table()):
        assert row["model"] == lib["model"]
        for key in ("spearman", "same_label", "nearest_overlap", "accuracy"):
            assert row[key] == pytest.approx(lib[key], rel=1e-9, abs=1e-12), (row["model"], key)
    for name, m in res.models.items():
        assert saved["models"][name]["top"][0]["helpful"]["ids"] == m.top[0].helpful.ids
    csv_lines = (out / "comparison.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,solver,params") and len(csv_lines) == 3
    # a model trained on other data is refused, in one line
    assert main(["compare", "--models", str(svm_dir), "--data", "digits:1,2", "--out", str(out)]) == 2
    assert "was trained on --data 'digits:1,7'" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--model", "svm", "--out", str(tmp_path / "x")]) == 2
    assert "binary" in capsys.readouterr().err
