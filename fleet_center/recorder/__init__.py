"""The center's metric recorder: schema builders, InfluxDB stores, local server launchers and the batching recorder."""
