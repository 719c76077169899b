"""aezip benchmarks: rate–distortion, speed and whole-folder figures against classic codecs (see README.md)."""
