"""Training helpers: losses (torch) and validation metrics / threshold choice (torch-free)."""
