"""Cloud-edge collaborative generation on the edge: the modes (generation), settings, the MQTT link, the operating point."""
