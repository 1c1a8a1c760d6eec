import torch
import torch.nn.functional as F

from whylens.outputs import class_score, margin, per_sample_loss, predicted_class, probabilities


def test_one_logit_loss_is_binary_cross_entropy_and_matches_two_logit_model():
    torch.manual_seed(0)
    z = torch.randn(50, 1, dtype=torch.float64) * 3
    y = torch.randint(0, 2, (50,))
    ref = F.binary_cross_entropy_with_logits(z[:, 0], y.double(), reduction="none")
    assert torch.allclose(per_sample_loss(z, y), ref, atol=1e-12)
    two = torch.cat([torch.zeros_like(z), z], dim=1)  # softmax([0, z]) == [1 - sigmoid z, sigmoid z]
    assert torch.allclose(per_sample_loss(two, y), ref, atol=1e-12)
    assert torch.allclose(probabilities(z), probabilities(two), atol=1e-12)
    assert torch.equal(predicted_class(z), predicted_class(two))


def test_class_score_and_margin():
    z = torch.tensor([[1.0, 3.0, -2.0], [0.5, 0.1, 0.7]])
    assert torch.equal(class_score(z, torch.tensor([1, 2])), torch.tensor([3.0, 0.7]))
    assert torch.allclose(margin(z, torch.tensor([1, 0])), torch.tensor([2.0, -0.2]))
    one = torch.tensor([[2.0], [-1.0]])
    assert torch.equal(class_score(one, torch.tensor([0, 0])), torch.tensor([-2.0, 1.0]))
    assert torch.equal(margin(one, torch.tensor([1, 0])), torch.tensor([2.0, 1.0]))
