"""Built-in quantizer plugins, one per module, registered through the `vqbench.quantizers`
entry-point group exactly as a third-party plugin would be."""
