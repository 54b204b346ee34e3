"""Built-in gradient estimators, one per module, registered through the `vqbench.estimators`
entry-point group exactly as a third-party plugin would be."""
