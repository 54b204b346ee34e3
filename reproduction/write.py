"""The study's document: an introduction, then each claim's section, from the repro reports."""

from __future__ import annotations

from pathlib import Path

from vqbench_reproduction.claims import (
    claim_1_joint_usage,
    claim_2_groups_beat_simvq,
    claim_5_linear_projector,
    claim_6_resampling,
    claim_7_group_distributions,
    claims_3_and_4_group_count,
)
from vqbench_reproduction.evidence import RESULTS, Evidence, load_report

from vqbench.files import atomic_write_text

INTRODUCTION = [
    "# Reproduction of the Group-VQ paper's claims at CPU scale",
    "",
    "Each claim is tested with the suites in `suites/repro/` (embedded photos, 32x32, "
    "tiny preset, 1,024 codes, 6 epochs = 192 steps, no LPIPS/GAN term, 3 seeds each). "
    "The criteria were fixed before the results were looked at: an effect needs the "
    "difference of means over seeds to exceed two standard errors (Welch); a smaller "
    "difference is no evidence either way. Runs of one seed share the data order (and in "
    "claim 6 the very same trained model), so a paired test is tighter; it was added "
    "after the first results were seen and is shown beside each difference, but "
    "verdicts use the pre-stated test. rFID and LPIPS are unavailable here (their "
    "Inception/VGG16 weights cannot be downloaded), so verdicts rest on PSNR, SSIM, usage "
    "and perplexity. Values are mean ± std over seeds; usage in percent. Reports with "
    "every metric and plots: `results/repro-*.md`.",
    "",
]


def document(results: Path = RESULTS, evidence: Evidence | None = None) -> str:
    evidence = evidence or Evidence()
    joint, groups = load_report("repro-joint", results), load_report("repro-groups", results)
    projectors = load_report("repro-projectors", results)
    sampling = load_report("repro-sampling", results)
    lines = INTRODUCTION + [
        *claim_1_joint_usage(joint, evidence),
        *claim_2_groups_beat_simvq(joint),
        *claims_3_and_4_group_count(groups, evidence),
        *claim_5_linear_projector(projectors),
        *claim_6_resampling(sampling),
        *claim_7_group_distributions(joint, evidence),
    ]
    return "\n".join(lines) + "\n"


def write(results: Path = RESULTS) -> Path:
    path = results / "REPRODUCTION.md"
    atomic_write_text(path, document(results))
    return path
