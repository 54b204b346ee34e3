"""The reproduction study's statistics (against scipy) and each claim on a hand-made report."""

import math

import pytest
from scipy import stats as scipy_stats
from vqbench_reproduction.claims import (
    claim_1_joint_usage,
    claim_2_groups_beat_simvq,
    claim_5_linear_projector,
    claim_6_resampling,
    claim_7_group_distributions,
    claims_3_and_4_group_count,
)
from vqbench_reproduction.stats import (
    diff,
    fmt,
    paired_diff,
    paired_three_way,
    three_way,
    verdict,
)


def test_difference_of_means_and_its_standard_error():
    d, se = diff([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert d == 2.0 and se == pytest.approx(1.0 / math.sqrt(3))
    assert fmt([1.0, 2.0, 3.0]) == "2.00 ± 1.00"


@pytest.mark.parametrize(
    "a, b",
    [([18.1, 18.6, 18.3], [17.9, 18.0, 18.4]), ([1.0, 2.5, 2.0, 4.0], [0.5, 0.7, 1.9, 1.2])],
)
def test_welch_and_paired_statistics_equal_scipy(a, b):
    d, se = diff(a, b)
    assert d / se == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).statistic)
    m, pse = paired_diff(a, b)
    assert m / pse == pytest.approx(scipy_stats.ttest_rel(a, b).statistic)


def test_two_standard_errors_decide_the_direction_or_nothing():
    assert three_way([10.0, 10.1, 9.9], [5.0, 5.1, 4.9]) is True
    assert three_way([5.0, 5.1, 4.9], [10.0, 10.1, 9.9]) is False
    assert three_way([1.0, 2.0, 3.0], [1.5, 2.5, 1.8]) is None
    assert paired_three_way([1.0, 2.0, 3.0], [0.9, 1.9, 2.85]) is True
    assert verdict(None) == "**inconclusive**" and verdict(False) == "**not reproduced**"


def report_row(run, metrics, operation=None, run_dirs=("a", "b", "c")):
    """A report row as `vqbench run` writes it: one `raw` result per seed."""
    seeds = len(next(iter(metrics.values())))
    raw = [{k: v[i] for k, v in metrics.items()} for i in range(seeds)]
    return {"run": run, "operation": operation, "raw": raw, "run_dirs": list(run_dirs)}


class FakeEvidence:
    def __init__(self, curves=None, anova=(1e-6, 0.5)):
        self.curves, self.anova = curves or {}, anova

    def usage_curve(self, run_dir):
        return self.curves.get(run_dir, [0.9, 0.97, 0.99])

    def epochs_to_full(self, run_dir):
        usage = self.usage_curve(run_dir)
        return next(i for i, u in enumerate(usage, 1) if u >= 0.9 * max(usage))

    def norm_anova(self, run_dir):
        return self.anova


def joint_report(group_psnr):
    return {
        "rows": [
            report_row(
                "vanilla",
                {"usage": [0.03] * 3, "psnr": [18.0, 18.1, 18.2], "used_codes": [30] * 3},
                run_dirs=["v0", "v1", "v2"],
            ),
            report_row(
                "simvq",
                {
                    "usage": [0.99, 0.98, 0.99],
                    "psnr": [18.5, 18.6, 18.7],
                    "used_codes": [1000] * 3,
                    "ssim": [0.5] * 3,
                },
                run_dirs=["s0", "s1", "s2"],
            ),  # fmt: skip
            report_row("group_vq", {"psnr": group_psnr, "ssim": [0.6] * 3, "usage": [0.5] * 3}),
        ]
    }


def test_claim_1_usage_part_needs_full_usage_from_epoch_two():
    evidence = FakeEvidence({d: [0.5, 0.99, 1.0] for d in ("s0", "s1", "s2")})
    text = "\n".join(claim_1_joint_usage(joint_report([19.0] * 3), evidence))
    assert "Verdict: usage part **reproduced**" in text
    assert "absolute PSNR **not reproduced**" in text  # vanilla 0.5 dB lower, se 0.08
    low = FakeEvidence({d: [0.5, 0.8, 1.0] for d in ("s0", "s1", "s2")})
    assert "usage part **not reproduced**" in "\n".join(
        claim_1_joint_usage(joint_report([19.0] * 3), low)
    )


@pytest.mark.parametrize(
    "group_psnr, expected",
    [([19.5, 19.6, 19.7], "reproduced"), ([18.4, 18.6, 18.8], "inconclusive"),
     ([17.5, 17.6, 17.7], "not reproduced")],
)  # fmt: skip
def test_claim_2_compares_group_vq_with_simvq(group_psnr, expected):
    assert f"Verdict: **{expected}**." in claim_2_groups_beat_simvq(joint_report(group_psnr))


def test_claims_3_and_4_on_a_made_up_group_count_study():
    usage = {1: 0.99, 4: 0.98, 16: 0.97, 64: 0.9, 256: 0.6, 1024: 0.4}
    psnr = {1: 18.0, 4: 18.3, 16: 19.0, 64: 18.6, 256: 18.2, 1024: 18.0}
    rows = [
        report_row(
            f"groups_{k}",
            {
                "usage": [usage[k] + d for d in (-0.01, 0, 0.01)],
                "psnr": [psnr[k] + d for d in (-0.05, 0, 0.05)],
                "perplexity": [100.0] * 3,
                "ssim": [0.5] * 3,
            },
        )
        for k in usage
    ]
    text = "\n".join(claims_3_and_4_group_count({"rows": rows}, FakeEvidence()))
    assert "usage part **reproduced**; reconstruction part **reproduced**" in text
    assert "best PSNR at k = 16" in text
    assert "## Claim 4" in text and "Verdict: **inconclusive**" in text  # every run: epoch 1


def test_claim_5_needs_linear_above_both():
    def report(lin):
        return {
            "rows": [
                report_row("linear", {"psnr": lin, "usage": [1.0] * 3}),
                report_row("mlp", {"psnr": [18.0, 18.1, 18.2], "usage": [1.0] * 3}),
                report_row("linear_mlp", {"psnr": [18.0, 18.1, 18.2], "usage": [1.0] * 3}),
            ]
        }

    assert "Verdict: **reproduced**." in claim_5_linear_projector(report([19.0, 19.1, 19.2]))
    assert "Verdict: **not reproduced**." in claim_5_linear_projector(report([17.0, 17.1, 17.2]))


def test_claim_6_on_a_made_up_resampling_study():
    base = [19.0, 19.1, 19.2]
    rows = [report_row("group_vq", {"psnr": base})]
    rows.append(report_row("group_vq", {"psnr": [p - 0.5 for p in base]}, ["resample", 512]))
    rows.append(report_row("group_vq", {"psnr": [p + 0.5 for p in base]}, ["resample", 2048]))
    for i in range(1, 7):
        shifted = [p + 0.1 * i for p in base]
        rows.append(report_row("group_vq", {"psnr": shifted}, ["extend", 1024 * 2**i]))
    text = "\n".join(claim_6_resampling({"rows": rows}))
    assert "Verdict: half **reproduced**; double **reproduced**" in text
    assert "rising PSNR **reproduced**" in text
    assert "extension vs resampling **not reproduced**" in text  # +0.1 vs +0.5: far below


def test_claim_7_needs_low_p_trained_and_high_p_initial():
    report = joint_report([19.0] * 3)
    assert "Verdict: **reproduced**." in claim_7_group_distributions(report, FakeEvidence())
    same = FakeEvidence(anova=(0.3, 0.5))
    assert "Verdict: **not reproduced**." in claim_7_group_distributions(report, same)


def test_the_command_without_reports_is_one_line_and_exit_2(tmp_path, capsys):
    from vqbench_reproduction.__main__ import main as reproduction_main

    assert reproduction_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "repro-joint.json is missing" in err[0]
    assert not (tmp_path / "REPRODUCTION.md").exists()
