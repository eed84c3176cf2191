"""`epdo eval`: commands registered on the main app."""
