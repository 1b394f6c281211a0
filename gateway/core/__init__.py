"""Records, errors and interfaces shared by every layer. Imports nothing else of ours."""
