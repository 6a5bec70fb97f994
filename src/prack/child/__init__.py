"""What both kinds of child process (acceptors, the API process) share: the
event loop with its heartbeats and graceful stop, and the send helpers."""
