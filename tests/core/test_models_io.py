import json

import pytest
import torch

from whylens import WhylensError, build_model, load_model, save_model


@pytest.mark.parametrize("name,kw", [("logistic", {"in_channels": 3, "image_size": 6, "num_classes": 4}),
                                     ("cnn", {"in_channels": 1, "num_classes": 3, "activation": "tanh"}),
                                     ("resnet", {"in_channels": 3, "num_classes": 2, "single_logit": True})])
def test_round_trip_gives_identical_outputs(tmp_path, name, kw):
    torch.manual_seed(0)
    m = build_model(name, **kw)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.rand(5, kw["in_channels"], 6, 6)
    m.eval()
    save_model(m, tmp_path, classes=[str(i) for i in range(kw["num_classes"])], input_shape=(kw["in_channels"], 6, 6))
    m2, cfg = load_model(tmp_path)
    assert cfg["model"] == name and not m2.training
    assert torch.equal(m(x), m2(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_cnn_has_the_5130_parameters_of_the_notes():
    assert sum(p.numel() for p in build_model("cnn", in_channels=1, num_classes=10).parameters()) == 5130
    tanh = build_model("cnn", in_channels=1, num_classes=10, widths=(8, 16), activation="tanh")
    assert sum(p.numel() for p in tanh.parameters()) == 1418


def test_weights_that_do_not_match_the_config_are_a_clear_error(tmp_path):
    m = build_model("cnn", in_channels=1, num_classes=10)
    save_model(m, tmp_path, classes=list("0123456789"), input_shape=(1, 8, 8))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["kwargs"]["widths"] = [8, 16]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WhylensError, match=r"conv1.weight.*has shape \(16, 1, 3, 3\).*expects \(8, 1, 3, 3\)"):
        load_model(tmp_path)
    cfg["model"] = "logistic"
    cfg["kwargs"] = {"in_channels": 1, "image_size": 8, "num_classes": 10}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WhylensError, match="missing .*linear.weight"):
        load_model(tmp_path)


def test_corrupt_or_missing_files(tmp_path):
    with pytest.raises(WhylensError, match="config.json: missing"):
        load_model(tmp_path)
    m = build_model("logistic", in_channels=1, image_size=8, num_classes=10)
    save_model(m, tmp_path, classes=list("0123456789"), input_shape=(1, 8, 8))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(WhylensError, match="not a readable safetensors file"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WhylensError, match="not valid JSON"):
        load_model(tmp_path)
