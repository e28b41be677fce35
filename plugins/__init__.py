"""Built-in plugins of harness, installed as ``harness_plugins``; each module is one plugin."""
