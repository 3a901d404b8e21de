"""saelab.stats: the one verdict rule on constructed cases, the bootstrap against independent references, Holm's
correction against a textbook example and statsmodels, degenerate and bad input."""

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from saelab import stats
from saelab.stats import Estimate


def est(value, low, high, se=0.1, level=0.95):
    return Estimate(value, low, high, level=level, se=se)


def from_distribution(mu, n=20_000, level=0.95):
    """An estimate whose bootstrap distribution is exactly N(mu, 1) quantiles (no resampling noise)."""
    d = mu + norm.ppf((np.arange(n) + 0.5) / n)
    low, high = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(mu, float(low), float(high), level, 1.0, 100, n, "percentile", d)


# ---- the rule, on constructed intervals ---------------------------------------------------------------------------


@pytest.mark.parametrize("direction, estimate, outcome", [
    ("greater", est(0.3, 0.1, 0.5), "held"),
    ("greater", est(-0.3, -0.5, -0.1), "contradicted"),
    ("greater", est(0.1, -0.1, 0.3), "inconclusive"),
    ("greater", est(0.2, 0.0, 0.4), "inconclusive"),  # touching the null is not excluding it
    ("less", est(-0.3, -0.5, -0.1), "held"),
    ("less", est(0.3, 0.1, 0.5), "contradicted"),
    ("less", est(0.1, -0.1, 0.3), "inconclusive"),
])
def test_directional_claims(direction, estimate, outcome):
    v = stats.verdict(estimate, direction=direction, claim="c")
    assert v.outcome == outcome and v.estimate is estimate
    assert ("contains" in v.reason) == (outcome == "inconclusive")


def test_the_null_can_move_and_a_margin_makes_a_non_inferiority_claim():
    assert stats.verdict(est(0.3, 0.1, 0.5), null=0.2).outcome == "inconclusive"
    assert stats.verdict(est(0.3, 0.25, 0.35), null=0.2).outcome == "held"
    slightly_worse = est(-0.02, -0.04, 0.0)
    assert stats.verdict(slightly_worse).outcome == "inconclusive"
    v = stats.verdict(slightly_worse, margin=0.05)  # "not worse by more than 0.05"
    assert v.outcome == "held" and v.test == ">= -0.05 (non-inferiority)"
    assert stats.verdict(est(-0.2, -0.3, -0.1), margin=0.05).outcome == "contradicted"
    assert stats.verdict(est(0.02, 0.0, 0.04), direction="less", margin=0.05).outcome == "held"


@pytest.mark.parametrize("estimate, outcome", [
    (est(0.01, -0.05, 0.06), "held"),
    (est(0.05, -0.02, 0.15), "inconclusive"),
    (est(0.0, -0.2, 0.2), "inconclusive"),  # wide interval around 0: no evidence of equivalence
    (est(0.3, 0.2, 0.4), "contradicted"),
    (est(-0.3, -0.4, -0.2), "contradicted"),
])
def test_equivalence_claims_need_the_interval_inside_the_margin(estimate, outcome):
    v = stats.verdict(estimate, direction="equivalent", margin=0.1)
    assert v.outcome == outcome and v.test == "within 0 ± 0.1"


def test_an_equivalence_claim_without_a_margin_is_refused():
    with pytest.raises(ValueError, match="margin declared before the run"):
        stats.verdict(est(0.0, -0.01, 0.01), direction="equivalent")


def test_a_failing_precondition_makes_the_claim_not_testable_whatever_the_interval():
    held = est(0.3, 0.1, 0.5)
    pre = {"SAE quality gate": (False, "SAE below quality gate"), "not at ceiling": True,
           "own threshold": (False, "threshold borrowed from another data set")}
    v = stats.verdict(held, preconditions=pre)
    assert v.outcome == "not testable"
    assert v.reason == ("SAE quality gate: SAE below quality gate; own threshold: threshold borrowed from another "
                        "data set")
    assert stats.verdict(held, preconditions={"gate": (True, "passed"), "ceiling": np.bool_(True)}).outcome == "held"
    assert stats.verdict(None, preconditions={"task at ceiling": False}).outcome == "not testable"
    with pytest.raises(ValueError, match="needs an estimate"):
        stats.verdict(None)
    with pytest.raises(TypeError, match="ok a bool"):
        stats.verdict(held, preconditions={"gate": "yes"})
    undefined = stats.verdict(est(math.nan, math.nan, math.nan))
    assert undefined.outcome == "not testable" and "undefined" in undefined.reason


def test_bad_claims_give_clear_errors():
    for bad in ({"direction": "bigger"}, {"margin": -0.1}, {"margin": math.inf}, {"null": math.nan},
                {"power": 1.5}):
        with pytest.raises(ValueError):
            stats.verdict(est(0.3, 0.1, 0.5), **bad)


def test_minimum_detectable_effect():
    # (z_0.975 + z_0.8) * SE = (1.95996 + 0.84162) * 0.1
    assert stats.minimum_detectable_effect(0.1) == pytest.approx(0.280164, abs=1e-5)
    assert stats.minimum_detectable_effect(0.1, level=0.9, power=0.5) == pytest.approx(0.1644854, abs=1e-6)
    v = stats.verdict(est(0.1, -0.1, 0.3, se=0.1))
    assert v.mde == pytest.approx(0.280164, abs=1e-5) and "MDE 0.28" in v.reason


# ---- the bootstrap -------------------------------------------------------------------------------------------------


def test_the_interval_is_a_percentile_bootstrap_over_items():
    x = np.random.default_rng(5).normal(size=50)
    e = stats.bootstrap_interval(np.mean, x, n_resamples=1000, seed=3)
    # an independent percentile bootstrap with numpy, same seed: the same resamples
    boot = x[np.random.default_rng(3).integers(0, 50, (1000, 50))].mean(1)
    tol = 0.05 * boot.std()
    assert e.low == pytest.approx(np.quantile(boot, 0.025), abs=tol)
    assert e.high == pytest.approx(np.quantile(boot, 0.975), abs=tol)
    assert e.se == pytest.approx(boot.std(ddof=1), rel=0.05)
    assert (e.value, e.n, e.n_resamples, e.level, e.method) == (pytest.approx(x.mean()), 50, 1000, 0.95, "percentile")
    assert str(e) == f"{x.mean():.3f} [{e.low:.3f}, {e.high:.3f}]"
    # the same call twice gives the same numbers; another seed other ones
    assert stats.bootstrap_interval(np.mean, x, n_resamples=1000, seed=3) == e
    assert stats.bootstrap_interval(np.mean, x, n_resamples=1000, seed=4) != e


def test_the_interval_of_a_mean_is_close_to_the_t_interval_for_large_n():
    x = np.random.default_rng(0).normal(1.0, 2.0, size=2000)
    e = stats.bootstrap_interval(np.mean, x, n_resamples=2000, level=0.9)
    se = x.std(ddof=1) / math.sqrt(len(x))
    half = student_t.ppf(0.95, len(x) - 1) * se
    assert e.low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert e.high == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert e.se == pytest.approx(se, rel=0.1)


def test_basic_method_reflects_the_percentile_interval():
    x = np.random.default_rng(1).exponential(size=40)
    p = stats.bootstrap_interval(np.mean, x, n_resamples=500)
    b = stats.bootstrap_interval(np.mean, x, n_resamples=500, method="basic")
    assert (b.low, b.high) == pytest.approx((2 * p.value - p.high, 2 * p.value - p.low))


def test_a_statistic_without_axis_gives_the_same_interval_as_its_vectorised_form():
    x = np.random.default_rng(2).normal(size=30)
    vectorised = stats.bootstrap_interval(np.median, x, n_resamples=300)
    looped = stats.bootstrap_interval(lambda s: float(np.median(s)), x, n_resamples=300)
    assert (looped.low, looped.high, looped.se) == pytest.approx((vectorised.low, vectorised.high, vectorised.se))


def test_paired_resampling_is_narrower_on_positively_correlated_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + 0.2 + rng.normal(scale=0.2, size=200)

    def diff(a, b, axis=-1):
        return a.mean(axis) - b.mean(axis)

    paired = stats.paired_difference(np.mean, y, x)
    unpaired = stats.bootstrap_interval(diff, y, x, paired=False)
    assert paired.value == pytest.approx(y.mean() - x.mean()) == pytest.approx(unpaired.value)
    assert paired.high - paired.low < 0.3 * (unpaired.high - unpaired.low)
    assert paired.low > 0 and unpaired.low < 0  # only pairing resolves the effect
    assert unpaired.n == (200, 200) and paired.n == 200
    assert stats.bootstrap_interval(diff, y, x) == paired  # paired is the default


def test_paired_difference_takes_several_samples_per_side():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 100)
    good = np.where(rng.random(100) < 0.9, labels, 1 - labels)
    bad = np.where(rng.random(100) < 0.6, labels, 1 - labels)

    def accuracy(y, p, axis=-1):
        return (y == p).mean(axis)

    d = stats.paired_difference(accuracy, (labels, good), (labels, bad), n_resamples=500)
    assert d.value == pytest.approx((good == labels).mean() - (bad == labels).mean())
    assert d.low > 0 and stats.verdict(d).outcome == "held"
    with pytest.raises(ValueError, match="same number of samples"):
        stats.paired_difference(accuracy, (labels, good), bad)


def test_undefined_resamples_are_dropped():
    num = np.array([1.0, 2.0, 0.5, 1.5, 3.0, 2.5])
    den = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 2.0])  # many resamples draw no positive denominator

    def ratio(a, b, axis=-1):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b.sum(axis) > 0, a.sum(axis) / b.sum(axis), np.nan)

    e = stats.bootstrap_interval(ratio, num, den, n_resamples=1000)
    assert 0 < e.n_resamples < 1000 and math.isfinite(e.low) and e.low <= e.value <= e.high
    nowhere = stats.bootstrap_interval(lambda a, axis=-1: np.full(np.shape(a)[:-1], np.nan), num, n_resamples=50)
    assert nowhere.n_resamples == 0 and math.isnan(nowhere.low)
    assert stats.verdict(nowhere).outcome == "not testable"


def test_degenerate_data_give_a_zero_width_interval_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = stats.bootstrap_interval(np.mean, np.full(10, 0.7))
        assert (same.value, same.low, same.high, same.se) == (0.7, 0.7, 0.7, 0.0)
        x = np.random.default_rng(0).normal(size=20)
        zero = stats.paired_difference(np.mean, x, x)
        assert (zero.value, zero.low, zero.high, zero.se) == (0.0, 0.0, 0.0, 0.0)
        flat = stats.bootstrap_interval(lambda a, axis=-1: np.ones(np.shape(a)[:-1]), x, method="basic")
        assert (flat.low, flat.high) == (1.0, 1.0)
    assert stats.verdict(zero).outcome == "inconclusive"  # exactly at the null
    assert stats.verdict(same).outcome == "held"


def test_bad_input_gives_clear_errors():
    x = np.arange(10.0)
    for args, kwargs, match in [
        ((np.ones((5, 2)),), {}, "1-D"),
        ((x, x[:-1]), {}, "lengths"),
        ((np.array(["a", "b"]),), {}, "numeric"),
        ((np.ones(1),), {}, "at least 2"),
        ((), {}, "at least one sample"),
        ((x,), {"level": 1.5}, "level"),
        ((x,), {"level": 0}, "level"),
        ((x,), {"level": 1}, "level"),
        ((x,), {"level": True}, "level"),
        ((x,), {"n_resamples": 0}, "n_resamples"),
        ((x,), {"method": "bca"}, "method"),
    ]:
        with pytest.raises(ValueError, match=match):
            stats.bootstrap_interval(np.mean, *args, **kwargs)
    with pytest.raises(ValueError, match="one number"):
        stats.bootstrap_interval(lambda a, axis=-1: np.stack([a.mean(axis), a.std(axis)]), x)
    with pytest.raises(TypeError, match="function"):
        stats.bootstrap_interval(3.0, x)
    stats.bootstrap_interval(lambda a, b, axis=-1: a.mean(axis) - b.mean(axis), x, x[:-1], paired=False)


# ---- p-values, levels and Holm -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [0.5, 1.5, 1.9, 2.1, 3.0, -2.5])
def test_the_bootstrap_p_value_agrees_with_the_interval(mu):
    e = from_distribution(mu)
    assert e.p_value() == pytest.approx(2 * norm.cdf(-abs(mu)), abs=1e-3)
    assert (e.p_value() < 0.05) == (e.low > 0 or e.high < 0)
    wider = e.at_level(0.99)
    assert wider.low < e.low and wider.high > e.high and wider.level == 0.99
    assert (e.p_value() < 0.01) == (wider.low > 0 or wider.high < 0)


def test_at_level_needs_the_resamples():
    assert est(0.3, 0.1, 0.5).at_level(0.95).low == 0.1
    with pytest.raises(ValueError, match="no bootstrap distribution"):
        est(0.3, 0.1, 0.5).at_level(0.99)


def test_holm_levels():
    assert stats.holm_levels(4) == pytest.approx([1 - 0.05 / 4, 1 - 0.05 / 3, 1 - 0.05 / 2, 0.95])
    assert stats.holm_levels(0) == [] and stats.holm_levels(1, 0.9) == pytest.approx([0.9])
    with pytest.raises(ValueError):
        stats.holm_levels(-1)


def test_holm_on_p_values_matches_the_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 against 0.05/4, 0.05/3, 0.05/2, 0.05: the first two are rejected, then stop
    reject, adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert reject.tolist() == [True, False, False, True]
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    for bad in ([0.1, 1.2], [math.nan], [[0.1]]):
        with pytest.raises(ValueError, match="p-values"):
            stats.holm(bad)


def test_holm_on_p_values_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.random.default_rng(0).uniform(0, 0.06, size=12)
    for level in (0.95, 0.9):
        reject, adjusted = stats.holm(p, level=level)
        ref_reject, ref_adjusted, _, _ = multipletests(p, alpha=1 - level, method="holm")
        assert reject.tolist() == ref_reject.tolist()
        assert adjusted == pytest.approx(ref_adjusted)


def test_holm_on_verdicts_widens_intervals_in_step_down_order():
    # two-sided p about 0.001, 0.03 and 0.04: Holm holds the first (0.001 < 0.05/3), not the second (0.03 > 0.025),
    # and so stops: the third is inconclusive though 0.04 < 0.05 would pass on its own
    strong, marginal, weak = from_distribution(3.29), from_distribution(2.17), from_distribution(2.054)
    claims = [stats.verdict(weak, claim="weak"), stats.verdict(strong, claim="strong"),
              stats.verdict(strong, claim="gated", preconditions={"gate": (False, "below the quality gate")}),
              stats.verdict(marginal, claim="marginal")]
    assert [v.outcome for v in claims] == ["held", "held", "not testable", "held"]
    out = stats.verdicts_with_holm(claims)
    assert [v.claim for v in out] == ["weak", "strong", "gated", "marginal"]
    assert [v.outcome for v in out] == ["inconclusive", "held", "not testable", "inconclusive"]
    assert [v.correction for v in out] == ["Holm 3/3", "Holm 1/3", "", "Holm 2/3"]
    assert [v.level for v in out] == pytest.approx([0.95, 1 - 0.05 / 3, 0.95, 0.975])
    assert "stopped at 'marginal'" in out[0].reason and "lies above 0" in out[0].reason
    assert out[2] == claims[2]
    # the same decisions as Holm on the claims' p-values
    reject, _ = stats.holm([claims[i].p_value for i in (0, 1, 3)])
    assert reject.tolist() == [out[i].outcome == "held" for i in (0, 1, 3)]
    assert stats.holm(claims) == out
    with pytest.raises(ValueError, match="bootstrap distribution"):
        stats.verdicts_with_holm([stats.verdict(est(0.3, 0.1, 0.5))])
    with pytest.raises(ValueError, match="different levels"):
        stats.verdicts_with_holm([claims[1], stats.verdict(from_distribution(3.0, level=0.9))])


def test_holm_on_real_bootstraps_and_an_equivalence_claim():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    same = x + rng.normal(scale=0.05, size=300)
    better = x + 0.3 + rng.normal(scale=0.05, size=300)
    claims = [stats.verdict(stats.paired_difference(np.mean, better, x), claim="better"),
              stats.verdict(stats.paired_difference(np.mean, same, x), direction="equivalent", margin=0.05,
                            claim="no change")]
    out = stats.verdicts_with_holm(claims)
    assert [v.outcome for v in out] == ["held", "held"]
    # both p-values sit at the floor 2 / (B + 1); the tie keeps the given order, so "better" is ranked first
    assert [v.level for v in out] == pytest.approx([0.975, 0.95])
    assert out[1] == replace(claims[1], correction="Holm 2/2")
    assert out[0].estimate.high - out[0].estimate.low > claims[0].estimate.high - claims[0].estimate.low


def test_claims_table():
    rows = [stats.verdict(est(0.3, 0.1, 0.5), claim="a"),
            stats.verdict(est(0.0, -0.01, 0.02), direction="equivalent", margin=0.05, claim="b"),
            stats.verdict(None, claim="c", preconditions={"ceiling": (False, "task at ceiling")})]
    table = stats.claims_table(rows)
    assert list(table.columns) == ["claim", "test", "value", "interval", "level", "margin", "MDE", "verdict",
                                   "reason", "correction"]
    assert table.verdict.tolist() == ["held", "held", "not testable"]
    assert table.interval.tolist() == ["[0.100, 0.500]", "[-0.010, 0.020]", ""]
    assert table.test.tolist() == ["> 0", "within 0 ± 0.05", "> 0"]
    assert table.reason[2] == "ceiling: task at ceiling"
    assert stats.claims_table([]).empty
    named = stats.claims_table(rows + [stats.verdict(est(0.3, 0.1, 0.5), claim="d", rests_on=["sae A"])])
    assert named["rests on"].tolist() == [(), (), (), ("sae A",)]  # for zoo.gate_claims
