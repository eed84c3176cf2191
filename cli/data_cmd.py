"""`epdo data`: commands registered on the main app."""
