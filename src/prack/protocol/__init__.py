"""Sans-IO protocol cores: bytes in, events and bytes out; no sockets, no
clocks, no processes. HTTP/1.1 (over the C parser) and RFC 6455."""
