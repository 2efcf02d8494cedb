"""Getting the FinLoRA data: downloads (urllib) and the named conversions, outside the pure core."""
