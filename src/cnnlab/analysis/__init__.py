"""What a trained run says: the Interpretation of its predictions, looking inside the network, probes, loading a trained run."""
