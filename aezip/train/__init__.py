"""Training: rate–distortion loss, in-memory crop sampling, the loop and model export."""
