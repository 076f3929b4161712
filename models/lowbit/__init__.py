"""Low-bit weight formats (q4 / q8 blocks of 32), their C kernels and the modules that run them."""
