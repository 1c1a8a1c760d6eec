import numpy as np
import pytest
from scipy import stats as sp

from whylens.stats import fit_slope, pearson, rankdata, spearman


@pytest.mark.parametrize("seed", [0, 1])
def test_against_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, 40).astype(float)  # many ties
    y = x + rng.normal(size=40)
    assert np.allclose(rankdata(x).numpy(), sp.rankdata(x))
    assert pearson(x, y) == pytest.approx(sp.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(sp.spearmanr(x, y)[0], abs=1e-12)
    assert fit_slope(x, y) == pytest.approx(sp.linregress(x, y).slope, abs=1e-12)
