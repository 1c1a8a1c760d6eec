"""Benchmark: whylens's influence solvers beside Captum and Kronfluence on the digits models.

Run: ``.venv/bin/python bench/influence.py`` (``--quick`` skips the runs known to take more
than about a minute; ``--loo`` adds the Koh & Liang leave-one-out study of the small tanh
and ReLU CNNs, ``--mislabel`` the mislabel-detection study of the CNNs). Writes
``bench/results/influence.json``.

* Data: the first 1,500 digits train, the first 100 of the 297 test digits are scored
  (scores are ``100 x 1,500``).
* Models: the logistic regression (650 parameters, L2 0.01, L-BFGS) and the ReLU SmallCNN
  (5,130 parameters, Adam 200 epochs, L2 1e-3), trained once and saved; every method
  scores the same weights.
* Methods: whylens ``exact``, ``exact`` with ``hessian="gauss_newton"``, ``cg``, ``lissa``,
  ``arnoldi``, ``ekfac``, ``tracin``, ``grad_dot``, ``grad_cos``; Captum's ``TracInCP``
  (``sample_wise_grads_per_batch=True``), ``NaiveInfluenceFunction`` (full rank,
  ``hessian_reg = n (l2 + damping)``: Captum builds the Hessian of the *summed* loss
  without weight decay, so this regulariser makes its answer equal to whylens's exact
  solver, up to the factor ``-n``) and ``ArnoldiInfluenceFunction`` (its defaults);
  Kronfluence's EK-FAC (true Fisher, ``damping_factor = l2 + damping``). Every method's
  scores are turned into whylens's convention (negative = helpful) before comparing.
* Time: fit + all scores, wall clock, in a fresh subprocess per method. When the first run
  takes under 5 s it is a warm-up and the median of ``--repeats`` more runs is reported
  (``first_seconds`` keeps the cold one); a longer first run is reported alone.
* Peak memory: each method runs in its own subprocess; reported is the peak resident
  set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus the resident set size
  just before the method starts (after imports, the model and the data are loaded).
  RSS counts everything the process touched (torch's allocator caching, Python objects,
  libraries loaded lazily by the method), so it is an upper bound on what the method
  needs, not a count of tensor bytes.
* Agreement: Pearson correlation of the flattened score matrix with whylens ``exact``, and
  the mean over test rows of the Spearman correlation. On the CNN the reference is
  ``exact`` too (float64, the true Hessian: 490 HVP columns plus conv2's block from
  Gauss-Newton, which the probe in ``dense_hessian`` verifies), or ``exact32`` (the same in
  float32) under ``--quick``. The CNN is not at a minimum (Adam) and its Hessian is
  indefinite, so ``exact32`` first picks ``damping="auto"`` (1.1 |lambda_min|) and every
  method is then given that damping.
* The floor: the 1,500 per-sample gradients computed once with ``vmap(grad)`` (float32
  and float64; whylens works in float64).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "influence.json"
N_TEST = 100
L2 = {"lr": 0.01, "cnn": 1e-3}
#: damping used by every curvature method on the CNN (its Hessian is indefinite)
CNN_DAMPING = 0.01
#: measured on 2 cores (NOTES and this bench): runs that --quick skips
SLOW = {("cnn", "captum_naive"): 223.0, ("cnn", "exact"): 110.0, ("cnn", "cg"): 400.0,
        ("cnn", "lissa"): 400.0}
WHYLENS = ["exact", "exact32", "exact_gn", "cg", "lissa", "arnoldi", "ekfac", "tracin", "grad_dot", "grad_cos"]
CAPTUM = ["captum_tracin", "captum_naive", "captum_arnoldi"]
KRONFLUENCE = ["kronfluence_ekfac"]


# -- data and models --------------------------------------------------------------------

def data():
    from whylens import digits_split
    tr, te = digits_split()
    return tr, te[:N_TEST]


def train_models(workdir: Path) -> dict:
    """Train the two models once and save them (whylens format) in ``workdir``."""
    from whylens import accuracy, build_model, save_model, train
    tr, te = data()
    out = {}
    torch.manual_seed(0)
    lr = build_model("logistic", in_channels=1, image_size=8, num_classes=10)
    r = train(lr, tr, l2=L2["lr"], progress=False)
    out["lr"] = {"params": 650, "grad_norm": r.grad_norm, "test_accuracy": accuracy(lr, te),
                 "train_seconds": r.seconds}
    save_model(lr, workdir / "lr", classes=tr.classes, input_shape=(1, 8, 8), training={"l2": L2["lr"]})
    torch.manual_seed(0)
    cnn = build_model("cnn", in_channels=1, num_classes=10)
    r = train(cnn, tr, l2=L2["cnn"], method="adam", epochs=200, lr=1e-2, progress=False)
    out["cnn"] = {"params": sum(p.numel() for p in cnn.parameters()), "grad_norm": r.grad_norm,
                  "test_accuracy": accuracy(cnn, te), "train_seconds": r.seconds}
    save_model(cnn, workdir / "cnn", classes=tr.classes, input_shape=(1, 8, 8), training={"l2": L2["cnn"]})
    return out


# -- the methods (each returns scores (n_test, n_train) in whylens's sign and scale) ------

def run_whylens(name, model, tr, te, l2, damping, tmp):
    from whylens.influence import Influence
    solver, opts = {"exact_gn": ("exact", {"hessian": "gauss_newton"}),
                    "exact32": ("exact", {"dtype": torch.float32})}.get(name, (name, {}))
    d = 0.0 if solver in ("tracin", "grad_dot", "grad_cos") else damping
    inf = Influence(model, solver, damping=d, l2=l2, progress=False, **opts).fit(tr)
    scores = inf.scores(te)
    info = {k: v for k, v in inf.info.items() if isinstance(v, (int, float, str, bool))}
    return scores, info


def _checkpoint(model, tmp) -> str:
    path = os.path.join(tmp, "checkpoint.pt")
    torch.save(model.state_dict(), path)
    return path


def run_captum(name, model, tr, te, l2, damping, tmp):
    from captum.influence import NaiveInfluenceFunction, TracInCP
    from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction
    from torch.utils.data import TensorDataset
    ds = TensorDataset(tr.images, tr.labels)
    n = len(tr)
    ckpt = _checkpoint(model, tmp)
    loss = torch.nn.CrossEntropyLoss(reduction="sum")
    common = dict(loss_fn=loss, batch_size=n, sample_wise_grads_per_batch=True)
    if name == "captum_tracin":
        method = TracInCP(model, ds, [ckpt], **common)
        # Captum: +lr g_t.g_j (positive = proponent); whylens's tracin: -g_t.g_j.
        return -method.influence((te.images, te.labels)).double(), {}
    if name == "captum_naive":
        p = sum(q.numel() for q in model.parameters())
        method = NaiveInfluenceFunction(model, ds, ckpt, projection_dim=p, hessian_reg=n * (l2 + damping),
                                        hessian_inverse_tol=1e-12, **common)
        # g_t (H_sum + n (l2 + d) I)^-1 g_j = -(whylens score) / n
        return -n * method.influence((te.images, te.labels)).double(), {"hessian_reg": n * (l2 + damping)}
    method = ArnoldiInfluenceFunction(model, ds, ckpt, **common)
    # Defaults (top-50 eigenpairs of the summed-loss Hessian, hessian_reg 1e-3): same sign
    # and scale as Naive, but a different curvature; only the correlation is comparable.
    return -n * method.influence((te.images, te.labels)).double(), {"defaults": True}


def run_kronfluence(name, model, tr, te, l2, damping, tmp):
    import torch.nn.functional as F
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from torch.utils.data import TensorDataset

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if sample:
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits, 1), 1).flatten()
            return F.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="sum")

    import logging
    logging.getLogger("kronfluence").setLevel(logging.ERROR)
    task = Classification()
    prepared = prepare_model(model, task)
    analyzer = Analyzer("bench", prepared, task, cpu=True, disable_tqdm=True, output_dir=tmp)
    train_ds = TensorDataset(tr.images, tr.labels)
    query_ds = TensorDataset(te.images, te.labels)
    analyzer.fit_all_factors("ekfac", train_ds, per_device_batch_size=len(tr),
                             factor_args=FactorArguments(strategy="ekfac"), overwrite_output_dir=True)
    analyzer.compute_pairwise_scores("scores", "ekfac", query_ds, train_ds,
                                     per_device_query_batch_size=len(te),
                                     per_device_train_batch_size=len(tr),
                                     score_args=ScoreArguments(damping_factor=l2 + damping),
                                     overwrite_output_dir=True)
    scores = analyzer.load_pairwise_scores("scores")["all_modules"]
    # Kronfluence: +g_t (F + d)^-1 g_j, positive = proponent.
    return -scores.double(), {"damping_factor": l2 + damping}


def _runner(method: str):
    if method.startswith("captum"):
        return run_captum
    if method.startswith("kronfluence"):
        return run_kronfluence
    return run_whylens


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(spec: dict) -> None:
    """Run one method in this (fresh) process; write its scores and a JSON line of facts."""
    import warnings

    from whylens import load_model
    warnings.filterwarnings("ignore")
    tr, te = data()
    model, _ = load_model(Path(spec["workdir"]) / spec["model"])
    l2, damping = L2[spec["model"]], spec["damping"]
    run = _runner(spec["method"])
    base = _status_mb("VmRSS")
    reset = _reset_peak()
    times, scores, info = [], None, {}
    # The first run pays one-off costs (lazy imports, vmap/autograd warm-up: about 1 s for
    # every library here); when it is short it is a warm-up, and the median of ``repeats``
    # further runs is reported. A long first run is reported as it is.
    for _ in range(spec["repeats"] + 1):
        fresh = copy.deepcopy(model)  # Kronfluence wraps the model's modules in place
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            scores, info = run(spec["method"], fresh, tr, te, l2, damping, tmp)
            times.append(time.perf_counter() - t0)
        if times[0] > 5.0:
            break
    first, timed = times[0], (times[1:] or times[:1])
    # VmHWM, reset just before the method; ru_maxrss would also count the parent's size at
    # fork (Linux keeps it across exec) and everything before the reset.
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(scores.detach().to(torch.float64), spec["out"])
    print("RESULT " + json.dumps({"seconds": statistics.median(timed), "first_seconds": first,
                                  "all_seconds": times,
                                  "rss_base_mb": base, "rss_peak_mb": peak,
                                  "rss_delta_mb": peak - base, "peak_reset": reset, "info": info}))


def run_method(workdir: Path, model: str, method: str, repeats: int, damping: float,
               timeout: float) -> dict:
    out = workdir / f"{model}_{method}.pt"
    spec = {"workdir": str(workdir), "model": model, "method": method, "repeats": repeats,
            "damping": damping, "out": str(out)}
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"ran over the {timeout:.0f} s timeout"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": tail[:300]}
    result = json.loads(lines[-1][len("RESULT "):])
    result["scores_file"] = str(out)
    return result


# -- the floor ----------------------------------------------------------------------------

def floor(workdir: Path, model_key: str, repeats: int) -> dict:
    """Seconds to compute the 1,500 per-sample training gradients once, ``vmap(grad)``."""
    from torch.func import functional_call, grad, vmap

    from whylens import load_model
    from whylens.outputs import per_sample_loss
    tr, _ = data()
    model, _ = load_model(workdir / model_key)
    out = {}
    for dtype in (torch.float32, torch.float64):
        m = model.to(dtype)
        params = {k: v.detach() for k, v in m.named_parameters()}
        x = tr.images.to(dtype)

        def loss(p, xi, yi, m=m):
            return per_sample_loss(functional_call(m, p, (xi[None],)), yi[None])[0]

        per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
        per_sample(params, x[:8], tr.labels[:8])  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            per_sample(params, x, tr.labels)
            times.append(time.perf_counter() - t0)
        out[str(dtype).replace("torch.", "")] = statistics.median(times)
    return out


# -- agreement -------------------------------------------------------------------------------

def agreement(scores: torch.Tensor, reference: torch.Tensor) -> dict:
    from whylens.stats import pearson, spearman_rows
    return {"pearson": pearson(scores.flatten(), reference.flatten()),
            "spearman_rows": float(spearman_rows(scores, reference).mean())}


# -- optional studies -----------------------------------------------------------------------

def koh_liang(activation: str, l2: float, max_iter: int) -> dict:
    """The protocol of tests/influence/test_loo_cnn.py for one activation and L2."""
    import warnings

    from whylens import accuracy, build_model, digits_split, train
    from whylens.influence import koh_liang_study
    from whylens.influence.loo import polish
    tr, te = digits_split()
    tr = tr[:500]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=10, widths=(8, 16), activation=activation)
    train(model, tr, l2=l2, method="adam", epochs=200, lr=1e-2, polish=100, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model64, gn = polish(model, tr, l2, preconditioner="gauss_newton", progress=False)
    out = {"activation": activation, "l2": l2, "grad_norm": gn, "test_accuracy": accuracy(model64, te)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = koh_liang_study(model64, tr, te, l2, max_iter=max_iter)
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        out["failed"] = str(exc)
        return out
    res = st.loo
    out.update(min_eigenvalue=st.influence.info["min_eigenvalue"], damping=st.damping, retrains=len(st.union),
               converged=int(res.converged.sum()), max_grad_norm=float(res.grad_norms.max()),
               per_test=st.per_test, mean_pearson=st.mean_pearson)
    if out["mean_pearson"] != out["mean_pearson"]:  # NaN: a correlation with zero variance
        out["note"] = (f"Pearson undefined: test accuracy {out['test_accuracy']:.3f}; the network is "
                       "(nearly) constant, so the leave-one-out changes do not vary")
    out["seconds"] = time.perf_counter() - t0
    return out


def mislabel(widths, l2: float, epochs: int) -> dict:
    from whylens import build_model, digits_split, predict
    from whylens.influence.mislabel import mislabel_experiment
    tr, _ = digits_split()
    out = {"widths": list(widths), "l2": l2, "epochs": epochs}
    for solver, kw in (("ekfac", {}), ("exact", {"params": ["fc"]})):
        r = mislabel_experiment(lambda: build_model("cnn", in_channels=1, num_classes=10, widths=tuple(widths)),
                                tr, 0.1, l2=l2, solver=solver, seed=0, progress=False,
                                train_kwargs={"method": "adam", "epochs": epochs, "lr": 1e-2},
                                influence_kwargs={"damping": 1e-3, **kw})
        with torch.no_grad():
            fit = predict(r.model, tr.images).argmax(1) == r.labels
        key = solver if solver == "ekfac" else "exact_fc"
        out[key] = {"summary": r.summary, "fits_flipped": float(fit[r.flipped].float().mean()),
                    "seconds": r.seconds}
    return out


# -- main -----------------------------------------------------------------------------------

def _row(name, r, ref_key="exact"):
    if "skipped" in r or "failed" in r:
        return f"  {name:18s} {r.get('skipped') or 'FAILED: ' + r['failed']}"
    agree = r.get("agreement", {})
    pe = agree.get("pearson", float("nan"))
    sp = agree.get("spearman_rows", float("nan"))
    return (f"  {name:18s} {r['seconds']:9.3f} s  {r['rss_delta_mb']:8.1f} MB "
            f"(peak {r['rss_peak_mb']:6.0f})  Pearson {pe:7.4f}  Spearman/row {sp:7.4f}")


def _ratio(a, b):
    try:
        return a / b
    except (TypeError, ZeroDivisionError):
        return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the runs known to take more than ~60 s")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of runs under 5 s (median)")
    ap.add_argument("--timeout", type=float, default=450, help="seconds before a method is given up")
    ap.add_argument("--only", nargs="*", help="run only these methods")
    ap.add_argument("--models", nargs="*", default=["lr", "cnn"], choices=["lr", "cnn"])
    ap.add_argument("--loo", action="store_true", help="add the Koh & Liang LOO study (tanh and ReLU)")
    ap.add_argument("--mislabel", action="store_true", help="add the CNN mislabel-detection study")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return

    try:
        import kronfluence  # noqa: F401
        have_kron, kron_reason = True, ""
    except Exception as exc:  # noqa: BLE001 - any import failure means "skip it"
        have_kron, kron_reason = False, f"kronfluence does not import ({type(exc).__name__}: {exc})"
    try:
        import captum  # noqa: F401
        have_captum, captum_reason = True, ""
    except Exception as exc:  # noqa: BLE001
        have_captum, captum_reason = False, f"captum does not import ({type(exc).__name__}: {exc})"

    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                          "load_average_start": os.getloadavg()},
              "settings": {"n_train": 1500, "n_test": N_TEST, "l2": L2, "cnn_damping": CNN_DAMPING,
                           "repeats": args.repeats, "quick": args.quick},
              "methods": {}, "floor": {}}
    methods = WHYLENS + CAPTUM + KRONFLUENCE
    if args.only:
        methods = [m for m in methods if m in args.only or m == "exact"]
    with tempfile.TemporaryDirectory() as tmpdir:
        workdir = Path(tmpdir)
        print("training the models ...", flush=True)
        report["models"] = train_models(workdir)
        for key in ("lr", "cnn"):
            m = report["models"][key]
            print(f"  {key}: {m['params']} params, test accuracy {m['test_accuracy']:.3f}, "
                  f"||grad J|| {m['grad_norm']:.1e}")
        for key in args.models:
            report["floor"][key] = floor(workdir, key, max(args.repeats, 5))
        for key in args.models:
            damping, results = 0.0, {}
            print(f"\n{key.upper()} ({report['models'][key]['params']} parameters)", flush=True)
            if key == "cnn":
                # The ReLU CNN is not at a minimum (Adam) and its Hessian is indefinite. The
                # float32 exact solver with damping="auto" measures the smallest eigenvalue and
                # picks 1.1 |lambda_min| (Koh & Liang's rule); every method then gets that damping.
                probe = run_method(workdir, key, "exact32", args.repeats, "auto", args.timeout)
                info = probe.get("info", {})
                damping = max(CNN_DAMPING, float(info.get("damping", CNN_DAMPING)))
                if info.get("damping") is not None and damping == float(info["damping"]):
                    results["exact32"] = probe
                report["settings"].update(cnn_lambda_min=info.get("min_eigenvalue"),
                                          cnn_lambda_max=info.get("max_eigenvalue"), cnn_damping_used=damping)
                print(f"  Hessian eigenvalues [{info.get('min_eigenvalue', float('nan')):.3g}, "
                      f"{info.get('max_eigenvalue', float('nan')):.3g}]: every method uses damping {damping:.3g}")
            for method in methods:
                if method in results:
                    pass
                elif method in CAPTUM and not have_captum:
                    results[method] = {"skipped": captum_reason}
                elif method in KRONFLUENCE and not have_kron:
                    results[method] = {"skipped": kron_reason}
                elif args.quick and SLOW.get((key, method), 0) > 60:
                    results[method] = {"skipped": f"--quick (about {SLOW[(key, method)]:.0f} s on 2 cores)"}
                else:
                    results[method] = run_method(workdir, key, method, args.repeats, damping, args.timeout)
                r = results[method]
                done = f"{r['seconds']:.3f} s" if "seconds" in r else (r.get("skipped") or r.get("failed"))
                print(f"    {method}: {done}", flush=True)
            # The reference: exact in float64 if it ran, else in float32.
            ref_key = next((k for k in ("exact", "exact32") if "scores_file" in results.get(k, {})), None)
            report["settings"][f"{key}_reference"] = ref_key
            ref = torch.load(results[ref_key]["scores_file"]) if ref_key else None
            print(f"  time (fit + 100x1500 scores), peak RSS over baseline, agreement with {ref_key}:")
            print(f"  {'floor (vmap grad)':18s} {report['floor'][key]['float32']:9.3f} s float32, "
                  f"{report['floor'][key]['float64']:.3f} s float64")
            for method, r in results.items():
                if ref is not None and "scores_file" in r:
                    r["agreement"] = agreement(torch.load(r["scores_file"]), ref)
                r.pop("scores_file", None)
                print(_row(method, r), flush=True)
            report["methods"][key] = results

    def sec(model, method):
        r = report["methods"].get(model, {}).get(method, {})
        return r.get("seconds")

    cnn_floor = report["floor"].get("cnn", {})
    exact_cnn = sec("cnn", "exact") or sec("cnn", "exact32")
    ratios = {
        "cnn_ekfac_over_floor64": _ratio(sec("cnn", "ekfac"), cnn_floor.get("float64")),
        "cnn_ekfac_over_floor32": _ratio(sec("cnn", "ekfac"), cnn_floor.get("float32")),
        "cnn_kronfluence_over_ekfac": _ratio(sec("cnn", "kronfluence_ekfac"), sec("cnn", "ekfac")),
        "cnn_captum_naive_over_exact": _ratio(sec("cnn", "captum_naive"), exact_cnn),
        "cnn_captum_naive_over_exact_gn": _ratio(sec("cnn", "captum_naive"), sec("cnn", "exact_gn")),
        "lr_captum_naive_over_exact": _ratio(sec("lr", "captum_naive"), sec("lr", "exact")),
        "lr_kronfluence_over_ekfac": _ratio(sec("lr", "kronfluence_ekfac"), sec("lr", "ekfac")),
    }
    report["ratios"] = ratios
    goals = {"cnn_ekfac_over_floor64": "<= 5", "cnn_kronfluence_over_ekfac": ">= 5",
             "cnn_captum_naive_over_exact": ">= 1", "cnn_captum_naive_over_exact_gn": ">= 10"}
    print("\nratios (goal):")
    for k, v in ratios.items():
        print(f"  {k:32s} {'n/a' if v is None else f'{v:8.2f}'}  {goals.get(k, '')}")

    if args.loo:
        report["loo"] = []
        print("\nKoh & Liang protocol, 500 digits, CNN widths (8, 16), 3 highest-loss test images, "
              "top 30 by |influence| each:", flush=True)
        for activation, l2, max_iter in (("tanh", 0.01, 50), ("relu", 0.01, 10), ("relu", 1e-3, 10)):
            r = koh_liang(activation, l2, max_iter)
            report["loo"].append(r)
            head = (f"  {activation} l2={l2:g}: accuracy {r['test_accuracy']:.3f}, "
                    f"||grad J|| {r['grad_norm']:.1e}")
            if "per_test" not in r:
                print(head + f"; {r.get('note') or r.get('failed')}")
                continue
            print(head + f", lambda_min {r['min_eigenvalue']:.2e}, damping {r['damping']:.2e}, "
                  f"{r['converged']}/{r['retrains']} retrains converged (max ||grad|| {r['max_grad_norm']:.1e})")
            for a in r["per_test"]:
                print(f"    test {a['test']}: Pearson {a['pearson']:.3f}  Spearman {a['spearman']:.3f}  "
                      f"slope {a['slope']:.3f}")
            if r.get("note"):
                print(f"    {r['note']}")
            print(f"    mean Pearson {r['mean_pearson']:.3f} ({r['seconds']:.0f} s)", flush=True)

    if args.mislabel:
        report["mislabel"] = []
        print("\nmislabel detection, 10 % of 1,500 digits flipped, found at 10 % checked:", flush=True)
        for widths, l2, epochs in (((16, 32), 1e-4, 100), ((32, 64), 0.0, 300)):
            r = mislabel(widths, l2, epochs)
            report["mislabel"].append(r)
            for key in ("ekfac", "exact_fc"):
                s = r[key]["summary"]
                print(f"  CNN {widths} {key:8s}: self-influence {s['self_influence']['found@10%']:.3f}, "
                      f"loss {s['loss']['found@10%']:.3f}, random {s['random']['found@10%']:.3f} "
                      f"(fits {r[key]['fits_flipped']:.2f} of the flipped labels)", flush=True)

    report["machine"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
