"""Benchmark: whylens vs Captum on the digits SmallCNN, Integrated Gradients and Grad-CAM.

Run: ``.venv/bin/python bench/attribution.py`` (about a minute on 2 cores). Writes
``bench/results/attribution.json``.

* Model: SmallCNN (Conv 1->16, ReLU, Conv 16->32, ReLU, GAP, Linear 32->10), trained
  briefly with Adam on the first 1,500 digits; inputs: 100 test images (1x8x8), targets
  = the predicted classes, passed explicitly to both libraries.
* IG: 50 Gauss-Legendre steps, baseline 0. whylens at its default ``chunk_size=512``;
  Captum at ``internal_batch_size=500`` (its fastest setting, NOTES) and at its
  default (one batch of 5,000) for reference.
* Grad-CAM at ``conv2``: whylens ``explain(..., "gradcam")`` (bilinear upsampling to 8x8)
  vs Captum ``LayerGradCam(relu_attributions=True)`` + ``LayerAttribution.interpolate``.
* Time: median wall time over ``--repeats`` rounds; in each round every runner runs once,
  in an order rotated from round to round, so background load hits all alike.
* Peak memory: torch's profiler records each allocation and free of torch's CPU
  allocator during the call; the running sum of their sizes in time order peaks at
  the most tensor memory the call held beyond what existed before it (Python objects
  and the glibc heap's own slack are not counted). tracemalloc does not see torch's
  allocations and RSS includes allocator caching, so neither is used. The largest
  batch that reached the model's forward is reported too. Both are measured for 100
  and 400 images: whylens's peak must stay flat (bounded by the chunk), a single
  5,000-input batch grows with images x steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from torch.profiler import ProfilerActivity, profile

from whylens import build_model, digits_split, train
from whylens.attribution import explain

STEPS = 50


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's start/stop lines, which it writes to fd 2 from C++."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_bytes(fn) -> int:
    """Most torch CPU memory held by ``fn()`` beyond what was allocated before the call."""
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak


def largest_batch(model, fn) -> int:
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, inp: sizes.append(int(inp[0].shape[0])))
    try:
        fn()
    finally:
        handle.remove()
    return max(sizes)


def timed(runners: dict, repeats: int) -> dict[str, float]:
    """Median seconds per runner, interleaved with the order rotated every round."""
    names = list(runners)
    for name in names:  # warm-up
        runners[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = float((a.detach() - b.detach()).abs().max())
    return {"max_abs_diff": d, "relative_to_max": d / float(b.detach().abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "attribution.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    train_set, test_set = digits_split()
    torch.manual_seed(0)
    model = build_model("cnn")
    train(model, train_set, l2=1e-3, epochs=15, lr=0.03, batch_size=128, progress=False)
    model.eval()
    x = test_set.images[:100]
    with torch.no_grad():
        t = model(x).argmax(1)

    cig = IntegratedGradients(model)
    gcam = LayerGradCam(model, model.conv2)
    ig = {
        "whylens": lambda: explain(model, x, "ig", target=t, steps=STEPS),
        "captum_ibs500": lambda: cig.attribute(x, target=t, n_steps=STEPS, method="gausslegendre",
                                               internal_batch_size=500),
        "captum_default": lambda: cig.attribute(x, target=t, n_steps=STEPS, method="gausslegendre"),
    }
    cam = {
        "whylens": lambda: explain(model, x, "gradcam", target=t, layer="conv2"),
        "captum": lambda: LayerAttribution.interpolate(
            gcam.attribute(x, target=t, relu_attributions=True), (8, 8), "bilinear")[:, 0],
    }
    ig_time = timed(ig, args.repeats)
    cam_time = timed(cam, 3 * args.repeats)
    ig_out = {k: f() for k, f in ig.items()}
    cam_out = {k: f() for k, f in cam.items()}

    pool = torch.cat([test_set.images, train_set.images])
    memory = {}
    for n in (100, 400):
        xn = pool[:n]
        with torch.no_grad():
            tn = model(xn).argmax(1)
        runs = {
            "whylens": lambda xn=xn, tn=tn: explain(model, xn, "ig", target=tn, steps=STEPS),
            "captum_ibs500": lambda xn=xn, tn=tn: cig.attribute(xn, target=tn, n_steps=STEPS,
                                                                internal_batch_size=500),
            "captum_default": lambda xn=xn, tn=tn: cig.attribute(xn, target=tn, n_steps=STEPS),
        }
        memory[n] = {k: {"peak_MiB": peak_bytes(f) / 2**20,
                         "largest_batch": largest_batch(model, f)} for k, f in runs.items()}

    result = {
        "setup": {"model": "SmallCNN (5,130 parameters), digits, Adam 15 epochs", "images": 100,
                  "image_shape": [1, 8, 8], "ig_steps": STEPS, "repeats": args.repeats,
                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                  "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                  "python": platform.python_version()},
        "integrated_gradients": {
            "median_s": ig_time,
            "ratio_whylens_over_captum_fastest": ig_time["whylens"] / ig_time["captum_ibs500"],
            "ratio_whylens_over_captum_default": ig_time["whylens"] / ig_time["captum_default"],
            "diff_vs_captum_ibs500": max_diff(ig_out["whylens"], ig_out["captum_ibs500"]),
            "diff_vs_captum_default": max_diff(ig_out["whylens"], ig_out["captum_default"]),
            "peak_memory": memory,
        },
        "gradcam": {
            "median_s": cam_time,
            "ratio_whylens_over_captum": cam_time["whylens"] / cam_time["captum"],
            "diff_vs_captum": max_diff(cam_out["whylens"], cam_out["captum"]),
        },
    }

    r = result["integrated_gradients"]
    print(f"Integrated Gradients, {STEPS} Gauss-Legendre steps, 100 digits images "
          f"({torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}):")
    for k, v in ig_time.items():
        print(f"  {k:15s} {v * 1000:8.1f} ms")
    print(f"  ratio whylens / captum(internal_batch_size=500) = "
          f"{r['ratio_whylens_over_captum_fastest']:.3f}; / captum(default) = "
          f"{r['ratio_whylens_over_captum_default']:.3f}")
    print(f"  max |whylens - captum| = {r['diff_vs_captum_ibs500']['max_abs_diff']:.2e} "
          f"({r['diff_vs_captum_ibs500']['relative_to_max']:.2e} of max |attr|)")
    for n, row in memory.items():
        print(f"  peak memory, {n} images: " + ", ".join(
            f"{k} {v['peak_MiB']:.1f} MiB (largest batch {v['largest_batch']})"
            for k, v in row.items()))
    g = result["gradcam"]
    print("Grad-CAM at conv2, upsampled to 8x8, 100 images:")
    for k, v in cam_time.items():
        print(f"  {k:15s} {v * 1000:8.2f} ms")
    d = g["diff_vs_captum"]
    print(f"  ratio whylens / captum = {g['ratio_whylens_over_captum']:.3f}; max |diff| = "
          f"{d['max_abs_diff']:.2e} ({d['relative_to_max']:.2e} of max)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
