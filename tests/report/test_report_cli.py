"""The report end to end from the command line, on a folder whose class name is hostile."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from whylens.cli import main

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
    """Two classes of 12x12 greyscale images: a bright square top-left vs bottom-right."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["normal", HOSTILE.replace("/", "_")]):
        d = root / name
        d.mkdir()
        for i in range(40):
            a = rng.uniform(0, 60, (12, 12))
            r = slice(1, 5) if c == 0 else slice(7, 11)
            a[r, r] += 150
            Image.fromarray(a.astype(np.uint8)).save(d / f"img_{i}.png")
    return root


@pytest.mark.slow
def test_report_from_the_cli_is_self_contained_and_escaped(hostile_folder, tmp_path, capsys):
    model_dir, out = tmp_path / "model", tmp_path / "report.html"
    base = ["--data", str(hostile_folder), "--image-size", "12", "--no-progress"]
    assert main(["train", "--model", "logistic", "--out", str(model_dir), *base]) == 0
    assert main(["report", "--model", str(model_dir), "--out", str(out), "--examples", "2", "--top", "3",
                 "--check-images", "8", "--loo", "4", "--lds-subsets", "4", "--flip", "0.1", *base]) == 0
    html = out.read_text()
    for section in ("model-data", "examples", "mislabels", "comparison", "trust"):
        assert f'id="{section}"' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "&lt;script&gt;alert(1)&lt;" in html
    assert len(re.findall(r"<img ", html)) > 20
    for check in ("sanity check", "deletion / insertion", "leave-one-out agreement",
                  "linear datamodeling score", "mislabel detection"):
        assert check in html, check


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "whylens", "report", "--model", str(tmp_path / "nope"),
                           "--data", "digits", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("whylens: error: --model")
    assert not out.exists()
