"""Real applications the worker tests run behind Prack and behind a
conventional server, to compare what clients get."""
