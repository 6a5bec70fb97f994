"""The master: binds the listeners, forks and supervises the children, hands
the server to a new generation on SIGUSR2, tells the outside world (pidfile,
sd_notify)."""
