import json

import numpy as np
import pytest
from PIL import Image

from whylens.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    assert main(["train", "--data", "digits", "--model", "cnn", "--epochs", "3", "--out", str(d), "--no-progress"]) == 0
    return d


def test_train_writes_model_config_and_metrics(trained):
    cfg = json.loads((trained / "config.json").read_text())
    metrics = json.loads((trained / "metrics.json").read_text())
    assert cfg["model"] == "cnn" and cfg["input_shape"] == [1, 8, 8] and cfg["training"]["l2"] == 1e-3
    assert set(metrics["splits"]) == {"train", "test"} and metrics["splits"]["test"]["n"] == 297


def test_explain_from_data_and_from_files(trained, tmp_path):
    out = tmp_path / "ex"
    assert main(["explain", "--model", str(trained), "--data", "digits", "--indices", "0,5", "--methods",
                 "gradcam,ig,gxi", "--out", str(out), "--no-progress"]) == 0
    maps = np.load(out / "maps.npz")
    assert maps["gradcam"].shape == (2, 8, 8) and maps["ig"].shape == (2, 1, 8, 8)
    assert len(list((out / "overlays").glob("*.png"))) == 6 and (out / "explanations.png").stat().st_size > 1000
    pred = json.loads((out / "predictions.json").read_text())
    assert [r["name"] for r in pred["images"]] == ["digits:1500", "digits:1505"]
    files = []
    for i in range(2):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray((np.eye(8) * 255).astype(np.uint8)).resize((32, 32)).save(p)
        files.append(str(p))
    out2 = tmp_path / "ex2"
    assert main(["explain", "--model", str(trained), "--images", *files, "--methods", "saliency",
                 "--out", str(out2), "--no-progress"]) == 0
    assert np.load(out2 / "maps.npz")["saliency"].shape == (2, 1, 8, 8)


@pytest.mark.parametrize("extra,message", [
    (["--methods", "gradcam", "--layer", "conv9"], "conv9"),
    (["--methods", "magic"], "magic"),
    (["--methods", "saliency", "--indices", "999"], "--indices: 999"),
    (["--methods", "saliency", "--target", "11"], "target"),
])
def test_bad_arguments_are_one_line_errors_and_write_nothing(trained, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    assert main(["explain", "--model", str(trained), "--data", "digits", "--out", str(out), "--no-progress",
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("whylens: error:") and message in err and "\n" not in err
    assert not (out / "explanations.png").exists()


def test_truncated_image_file_is_named(trained, tmp_path, capsys):
    p = tmp_path / "broken.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:40])
    assert main(["explain", "--model", str(trained), "--images", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "broken.png" in capsys.readouterr().err
