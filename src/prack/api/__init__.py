"""The API process: serves the worker REST API, hands ring records to pulling
workers and routes their responses, streams, uploads and WebSocket messages
to the acceptor holding each client."""
