"""The node runtime: settings, role entry points, child processes, threads, resource and speed probes."""
