"""What both kinds of child process (acceptors, the API process) share: the
event loop with its heartbeats and graceful stop, the accept loop, one
buffered non-blocking connection, and the send helpers."""
