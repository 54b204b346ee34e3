"""The reproduction study of the Group-VQ paper (arXiv 2510.13331) at CPU scale.

Outside the core: it reads the reports of `suites/repro/*.yaml` and writes
`results/REPRODUCTION.md` (`python -m vqbench_reproduction`).
"""
