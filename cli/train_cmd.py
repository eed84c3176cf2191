"""`epdo train`: commands registered on the main app."""
