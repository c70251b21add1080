"""CPU (and GPU) fast paths: the oneDNN linear, the fused linear cross-entropy, the additive attention kernels."""
