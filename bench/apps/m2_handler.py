"""A Mongrel2 hello-world handler on pyzmq: pulls requests from Mongrel2's
send_spec, answers each on recv_spec by connection id. Written for the
benchmark from Mongrel2's documented wire format (tnetstring headers)."""
import sys

import zmq

BODY = b"Hello, World!"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n" + BODY)


def main(send_spec: str, recv_spec: str) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(send_spec)
    pub = ctx.socket(zmq.PUB)
    pub.connect(recv_spec)
    while True:
        msg = pull.recv()
        # "SENDER CONN_ID PATH tnetstring-headers tnetstring-body"
        sender, conn_id, path, rest = msg.split(b" ", 3)
        hlen, _, rest = rest.partition(b":")
        headers = rest[:int(hlen)]
        if b"6:METHOD,4:JSON," in headers or b'"METHOD":"JSON"' in headers:
            continue    # disconnect notices and other control messages
        pub.send(b"%s %d:%s, %s" % (sender, len(conn_id), conn_id, RESPONSE))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
