"""An acceptor process: owns client connections, parses requests into its
ring, writes the responses the API process routes back, serves static files,
spools uploads and carries WebSockets."""
