"""Early exits: heads, the exit policy, its calibration, the distillation corpus and training."""
