"""The child event loop: events for sockets closed earlier in the same batch
are skipped, and a stop ends as soon as the loop is drained."""
import selectors
import socket

from prack.child.loop import ChildLoop


class TwoSockets(ChildLoop):
    tick = 0.05

    def __init__(self):
        super().__init__()
        self.pairs = [socket.socketpair() for _ in range(2)]
        self.calls = []
        for a, b in self.pairs:
            self.sel.register(a, selectors.EVENT_READ, a)
            b.send(b"x")          # both readable in the first select()

    def _on_event(self, sock, mask):
        self.calls.append(sock)
        # Whichever comes first closes the other one, as a response written
        # for another connection may fail and close it.
        for a, _ in self.pairs:
            if a is not sock and a.fileno() >= 0:
                self.sel.unregister(a)
                a.close()
        self._begin_stop()

    def _drained(self):
        return True


def test_event_of_a_socket_closed_in_the_same_batch_is_skipped():
    loop = TwoSockets()
    try:
        loop._loop()
        assert len(loop.calls) == 1
    finally:
        for a, b in loop.pairs:
            a.close()
            b.close()
        loop.sel.close()
