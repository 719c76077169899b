"""The network: transforms, per-quality gains and priors, and its on-disk weights."""
