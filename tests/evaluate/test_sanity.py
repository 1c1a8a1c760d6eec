from whylens.evaluate import edge_detector, randomization_check


def test_model_randomisation_check(digits, digits_cnn):
    """Adebayo et al. 2018: once the whole network is re-initialised, maps that explain the model
    change (rank correlation of magnitudes < 0.5); an edge detector of the input does not."""
    _, te = digits
    x = te.images[:40]
    res = randomization_check(digits_cnn, x, ["saliency", "gradcam", "integrated_gradients",
                                              "gradient_x_input", edge_detector], seed=0)
    final = {k: v[-1] for k, v in res.items() if k != "layers"}
    print("layers randomised top-down:", res["layers"])
    print("Spearman |map| original vs fully randomised:", {k: round(v, 3) for k, v in final.items()})
    assert res["layers"][0] == "fc" and len(res["saliency"]) == len(res["layers"]) == 3
    assert final["saliency"] < 0.5
    assert final["gradcam"] < 0.5
    assert final["edge_detector"] > 0.99  # model-independent: fails the check
