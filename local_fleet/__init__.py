"""`make run`: the whole fleet on one machine (see launcher.py)."""
