"""The report's checks: how far can each explanation be trusted?

Each check returns rows ``{"name", "value", "meaning", "status", "figure_png"}`` for the
report's trust table; ``meaning`` is one sentence that says what the number means.
"""

from __future__ import annotations

import copy

import torch

from ..commands import retrain_kwargs
from ..outputs import predicted_class
from ..train import predict
from .images import image_png, png_bytes
from .influence_figures import loo_scatter, mislabel_curves

SANITY_OK = 0.5


def _row(name, value, meaning, status="info", figure=None) -> dict:
    return {"name": name, "value": value, "meaning": meaning, "status": status, "figure_png": figure}


def attribution_checks(model, test, methods: list[str], n: int = 32, seed: int = 0) -> list[dict]:
    """Randomisation sanity check, deletion/insertion AUCs and (with masks) localisation."""
    from ..attribution import explain
    from ..evaluate import deletion_insertion, mass_inside, pointing_game, randomization_check
    from .pipeline import usable_methods
    methods = usable_methods(model, methods)
    x = test.images[:n]
    rows = []
    # the check recomputes every map once per randomised layer: IG at 16 steps keeps it affordable
    san = randomization_check(model, x, methods, seed=seed, options={"integrated_gradients": {"steps": 16}})
    for m in methods:
        rho = san[m][-1]
        keeps_input = m in ("integrated_gradients", "gradient_x_input")
        status = "ok" if rho < SANITY_OK else ("info" if keeps_input else "warn")
        extra = (" Gradient x Input and Integrated Gradients multiply by the input, so they keep some input "
                 "structure by construction (Adebayo et al. 2018).") if keeps_input else ""
        rows.append(_row(f"sanity check: {m}", f"Spearman {rho:.2f} after randomising all layers",
                         "How similar the maps stay once the network's weights are re-initialised: below "
                         f"{SANITY_OK} means the method depends on what the model learned." + extra, status))
    for m in methods:
        attr = explain(model, x, m)
        r = deletion_insertion(model, x, attr, steps=16, seed=seed)
        better = r["deletion_auc"] < r["random_deletion_auc"] and r["insertion_auc"] > r["random_insertion_auc"]
        rows.append(_row(f"deletion / insertion: {m}",
                         f"deletion AUC {r['deletion_auc']:.3f} (random {r['random_deletion_auc']:.3f}); insertion "
                         f"AUC {r['insertion_auc']:.3f} (random {r['random_insertion_auc']:.3f})",
                         "Removing the pixels the map ranks highest should drop the predicted class's probability "
                         "faster than removing random pixels (lower deletion AUC), and restoring them should raise "
                         "it faster (higher insertion AUC).", "ok" if better else "warn"))
    if test.masks is not None and bool((test.masks.flatten(1).sum(1) > 0).any()):
        has = (test.masks.flatten(1).sum(1) > 0).nonzero().flatten()[: max(n, 32)]
        xm, mm = test.images[has], test.masks[has]
        target = test.labels[has]
        for m in methods:
            a = explain(model, xm, m, target=target)
            hit = float(pointing_game(a, mm, tolerance=2).float().mean())
            mass = float(mass_inside(a, mm).nanmean())
            rows.append(_row(f"localisation: {m}",
                             f"pointing game {hit:.0%}; {mass:.0%} of positive mass in the lesion",
                             "How often the map's peak falls on the annotated lesion (within 2 pixels) and how much "
                             "of its positive attribution lies inside it: low values mean the model looks elsewhere.",
                             "ok" if hit >= 0.8 else "warn"))
    return rows


def influence_checks(model, config, inf, train, test, *, l2: float, loo: int, subsets: int, solver: str,
                     seed: int) -> list[dict]:
    """Leave-one-out agreement and the linear datamodeling score of the report's influence solver."""
    from ..evaluate.lds import linear_datamodeling_score, subset_masks, subset_measurements
    from .pipeline import warm_or_fresh
    rows = []
    n = len(train)
    if loo > 0:
        rows.append(_loo_row(model, inf, train, test, l2=l2, loo=loo, solver=solver))
    if subsets >= 3:
        masks = subset_masks(n, subsets, 0.5, seed)
        tt = test[: min(len(test), 50)]
        convex = getattr(model, "convex", False) or type(model).__name__ == "LogisticRegression"
        small = tt.images[0].numel() <= 32 * 32 * 3 and n <= 5000
        head = None if (convex or small) else last_layer_head(model, torch.cat([train.images, tt.images]))
        if head is None:
            what = f"{subsets} models trained on random halves"
            actual = subset_measurements(warm_or_fresh(model, config, seed), train, tt, masks, l2,
                                         train_kwargs=retrain_kwargs(config), progress=False)
            scores = inf.scores(tt)
        else:
            # whole networks on large images take too long to retrain many times: refit the last
            # layer on frozen features instead, and score it with exact influence on that layer
            from ..influence import Influence
            net, feats = head
            what = f"{subsets} last layers refitted on random halves, features frozen"
            actual = subset_measurements(lambda: copy.deepcopy(net), (feats[:n], train.labels),
                                         (feats[n:], tt.labels), masks, l2, progress=False)
            scores = Influence(net, solver="exact", l2=l2, progress=False).fit((feats[:n], train.labels)).scores(
                feats[n:], tt.labels)
        lds = linear_datamodeling_score(scores, masks, actual).lds
        rows.append(_row("linear datamodeling score (LDS)", f"{lds:.2f} ({what}; {len(tt)} test images)",
                         "Rank correlation between the test losses predicted by summing influence over a training "
                         "subset and those of models actually trained on it: 1 is perfect, 0 is chance.",
                         "ok" if lds >= 0.3 else "warn"))
    return rows


def last_layer_head(model, images: torch.Tensor):
    """``(head, features)``: the model's last ``nn.Linear`` as a model on its own input features.

    Returns ``None`` when the model's output is not exactly that layer applied to those
    features (something follows the last linear layer).
    """
    from torch import nn
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    fc, feats = linears[-1], []
    handle = fc.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach().flatten(1)))
    try:
        logits = predict(model, images)
    finally:
        handle.remove()
    x = torch.cat(feats)
    head = nn.Sequential(nn.Flatten(), nn.Linear(fc.in_features, fc.out_features)).to(fc.weight.dtype)
    head[1].load_state_dict(fc.state_dict())
    head.eval()
    with torch.no_grad():
        if not torch.allclose(head(x), logits, rtol=1e-4, atol=1e-5):
            return None
    return head, x[:, :, None, None]


def _loo_row(model, inf, train, test, *, l2: float, loo: int, solver: str) -> dict:
    """Leave-one-out agreement: each of the ``loo`` largest-|influence| images removed and the model retrained.

    Convex models are retrained whole. For networks, whose retraining is slow and (with ReLU)
    ill-posed, the check freezes the features and retrains the last linear layer, comparing with
    exact influence on that layer: a check of the influence machinery on the part of the network
    that is convex, said so in the row's text.
    """
    from ..commands import fit_influence
    from ..influence import Influence
    from ..influence.loo import leave_one_out, loo_agreement
    from ..outputs import loss_for
    n = len(train)
    # the test image the model finds hardest: where influence has the most to explain
    t = int(loss_for(model)(predict(model, test.images).double(), test.labels).argmax())
    xt, yt = test.images[t:t + 1], test.labels[t:t + 1]
    convex = getattr(model, "convex", False) or type(model).__name__ == "LogisticRegression"
    what = "the whole model"
    if convex:
        net, tr_x, te_x, scorer = model, train.images, xt, inf
    else:
        head = last_layer_head(model, torch.cat([train.images, xt]))
        if head is None:
            return _row("leave-one-out agreement", "not computed",
                        "The model's output is not its last linear layer, so the last-layer check does not apply.")
        net, feats = head
        tr_x, te_x = feats[:n], feats[n:]
        scorer = Influence(net, solver="exact", l2=l2, progress=False).fit((tr_x, train.labels))
        what = "the last linear layer on frozen features"
    s = scorer.scores(te_x, yt)[0]
    remove = s.abs().argsort(descending=True)[:loo].tolist()
    res = leave_one_out(net, (tr_x, train.labels), remove, (te_x, yt), l2, progress=False)
    # influence at the polished optimum the retrains started from, so both sides share theta
    inf64 = fit_influence(res.model, (tr_x, train.labels), l2, "exact", progress=False)
    pred = -inf64.scores(te_x, yt)[0, remove] / n
    agree = loo_agreement(pred, res.delta[:, 0])
    fig = png_bytes(loo_scatter(pred.numpy(), res.delta[:, 0].numpy(), agree, "leave-one-out"))
    return _row("leave-one-out agreement",
                f"Pearson {agree['pearson']:.2f}, Spearman {agree['spearman']:.2f}, slope {agree['slope']:.2f} over "
                f"the {loo} largest-|influence| training images ({what})",
                "Each of these training images was actually removed and the model retrained: a Pearson near 1 and a "
                "slope near 1 mean the influence scores predict what removing an image does.",
                "ok" if agree["pearson"] >= 0.8 else "warn", fig)


def mislabel_section(model, config, inf, train, *, flip: float | None, l2: float, solver: str, seed: int,
                     top: int = 12) -> dict:
    """Top suspects by self-influence on the given labels and, with ``flip``, the detection experiment."""
    self_inf = inf.self_influence()
    order = self_inf.argsort()[:top].tolist()  # most negative = largest magnitude first
    pred = predicted_class(predict(model, train.images))
    out = {"items": [{"png": image_png(train.images[j]), "given": train.classes[int(train.labels[j])],
                      "predicted": train.classes[int(pred[j])], "score": float(self_inf[j]), "id": train.ids[j]}
                     for j in order],
           "curve_png": None, "summary": []}
    if flip:
        from ..commands import auto_solver
        from ..influence.mislabel import mislabel_experiment
        from .pipeline import warm_or_fresh
        name, opts = auto_solver(model, solver)
        res = mislabel_experiment(warm_or_fresh(model, config, seed), train, fraction=flip, l2=l2, solver=name,
                                  seed=seed, train_kwargs=retrain_kwargs(config), influence_kwargs=opts,
                                  progress=False)
        curves = {k: (c[0].numpy(), c[1].numpy()) for k, c in res.curves.items()}
        out["curve_png"] = png_bytes(mislabel_curves(curves, f"{flip:.0%} of labels flipped"))
        out["summary"] = [{"name": f"{rank} ranking", "value": ", ".join(f"{k} {v:.0%}" if k != "auc" else
                                                                          f"area {v:.2f}" for k, v in m.items())}
                          for rank, m in res.summary.items()]
        found = {k: m["found@10%"] for k, m in res.summary.items()}
        out["trust"] = _row("mislabel detection", f"checking the top 10 % finds {found['self_influence']:.0%} of "
                            f"flipped labels (training loss {found['loss']:.0%}, random {found['random']:.0%})",
                            "After flipping a known fraction of labels and retraining, how many of them the "
                            "self-influence ranking puts at the top; far above random means the suspects list is "
                            "worth checking.", "ok" if found["self_influence"] > 2 * found["random"] else "warn",
                            out["curve_png"])
    return out


def comparison_section(model, config, compare, splits, idx, *, top: int, seed: int, progress: bool) -> dict:
    """The same test images under a second model: what each looked at and learned from."""
    from ..attribution import explain
    from ..commands import fit_influence, train_reference
    from .images import overlay_png
    from .pipeline import usable_methods
    train, test = splits["train"], splits["test"]
    if compare is None:
        other, info = train_reference("logistic", train, seed=seed, progress=False)
        other_cfg = {"model": "logistic", "training": info}
    else:
        other, other_cfg = compare
    models = [(config.get("model", "model"), model, config), (other_cfg.get("model", "model 2"), other, other_cfg)]
    x, y = test.images[idx], test.labels[idx]
    per = []
    rows = []
    for name, m, cfg in models:
        inf = fit_influence(m, train, float(cfg.get("training", {}).get("l2", 0.0)), "auto", progress=False)
        method = "gradcam" if usable_methods(m, ["gradcam"]) else "gradient_x_input"
        maps = explain(m, x, method)
        logits = predict(m, x)
        tops = inf.top(x, y, k=top)
        per.append((name, method, maps, logits, tops))
        helpful_same = torch.tensor([[train.labels[j] == y[t] for j in r.helpful.indices] for t, r in enumerate(tops)])
        acc = float((predicted_class(predict(m, test.images)) == test.labels).float().mean())
        rows.append([name, f"{acc:.1%}", method, inf.solver_name, f"{float(helpful_same.float().mean()):.0%}"])
    examples = []
    for t, i in enumerate(idx):
        pm = []
        for name, method, maps, logits, tops in per:
            p = torch.softmax(logits, 1) if logits.shape[1] > 1 else torch.cat([1 - torch.sigmoid(logits),
                                                                                torch.sigmoid(logits)], 1)
            c = int(p[t].argmax())
            pm.append({"model": f"{name} ({method})", "predicted": test.classes[c], "probability": float(p[t, c]),
                       "heatmap_png": overlay_png(x[t], maps[t]),
                       "helpful": [{"png": image_png(train.images[j]), "label": train.classes[int(train.labels[j])],
                                    "score": s, "id": train.ids[j]}
                                   for j, s in zip(tops[t].helpful.indices, tops[t].helpful.scores)],
                       "harmful": [{"png": image_png(train.images[j]), "label": train.classes[int(train.labels[j])],
                                    "score": s, "id": train.ids[j]}
                                   for j, s in zip(tops[t].harmful.indices, tops[t].harmful.scores)]})
        examples.append({"id": test.ids[i], "image_png": image_png(x[t]), "label": test.classes[int(y[t])],
                         "per_model": pm})
    # Koh & Liang's two numbers over many test images: does each model learn from pixel neighbours?
    from ..commands import auto_solver
    from ..compare import compare_models, comparison_figure, default_rows
    entries = {}
    for name, m, cfg in models:
        solver_name, opts = auto_solver(m, "auto")
        opts = {"solver": solver_name, **opts} if solver_name != "ekfac" else {"solver": "exact",
                                                                               "params": [_last_linear(m)]}
        entries[name] = (m, float(cfg.get("training", {}).get("l2", 0.0)), opts)
    res = compare_models(entries, train, test, k=top, n_test=min(30, len(test)), progress=False)
    figure = png_bytes(comparison_figure(res, rows=default_rows(res.test.labels, 2)))
    summary = {r["model"]: r for r in res.table()}
    for row in rows:
        r = summary[row[0]]
        row += [f"{r['spearman']:.2f}", f"{r['nearest_overlap']:.0%}"]
    return {"models": [m[0] for m in models], "figure_png": figure,
            "table": {"header": ["model", "test accuracy", "heatmap", "influence solver",
                                 "top helpful sharing the test label",
                                 f"Spearman(|influence|, pixel similarity), {res.test.images.shape[0]} test images "
                                 "(exact influence; networks: last layer)",
                                 "top helpful among the pixel-nearest"], "rows": rows},
            "examples": examples}


def _last_linear(model) -> str:
    from ..compare import last_linear
    return last_linear(model)
