"""Scripts that write reference fixtures from a checkout of a method's official code.

Each script ``tools/reference_fixtures/<method>.py --checkout PATH`` imports the reference
implementation from a local checkout (never committed here), runs it on fixed inputs with
fixed weights, and writes ``tests/reference/fixtures/<method>.safetensors`` (the tensors) and
``<method>.json`` (the repository, its commit, the files used, the script and the settings).
The tests in ``tests/reference/`` read the fixtures and require vqbench to reproduce them.
"""
