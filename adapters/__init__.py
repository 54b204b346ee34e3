"""Built-in adapters of published tokenizers (`vqbench.published.PublishedTokenizer`), one per
module, registered through the entry-point group `vqbench.tokenizers` as a third-party
package's would be."""
