"""Models: verified bundles (graph, tokenizer, manifest, policy) and the inference engine."""
