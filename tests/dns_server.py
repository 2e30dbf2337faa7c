"""A tiny authoritative nameserver for the ``--discover dns`` tests: UDP on 127.0.0.1, in a
thread, answering A, AAAA and PTR queries from records a test changes while it runs, or
SERVFAIL, or nothing at all (a timeout), as told. Answers are built with dnspython."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.reversename
import dns.rrset

TTL = 0


class FakeDns:
    """``records``: name -> its addresses, IPv4 (A) and IPv6 (AAAA) (absent: NXDOMAIN);
    ``pointers``: address -> the PTR target's labels; ``mode``: ``answer``, ``servfail`` or
    ``silent``."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.pointers: dict[str, tuple[bytes, ...]] = {}
        self.mode = "answer"
        self.servfail: set[str] = set()  # query types answered SERVFAIL whatever the mode
        self.queries = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> FakeDns:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            self.queries += 1
            if self.mode == "silent":
                continue
            answer = self._answer(dns.message.from_wire(data))
            self._socket.sendto(answer.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        if self.mode == "servfail" or dns.rdatatype.to_text(question.rdtype) in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        name = question.name.to_text(omit_final_dot=True).lower()
        if question.rdtype == dns.rdatatype.PTR:
            labels = self.pointers.get(str(dns.reversename.to_address(question.name)))
            if labels is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                return response
            target = dns.rdtypes.ANY.PTR.PTR(
                dns.rdataclass.IN, dns.rdatatype.PTR, dns.name.Name(labels)
            )
            response.answer.append(dns.rrset.from_rdata(question.name, TTL, target))
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif addresses := [
            a for a in self.records[name] if (":" in a) == (question.rdtype == dns.rdatatype.AAAA)
        ]:
            kind = dns.rdatatype.to_text(question.rdtype)
            response.answer.append(
                dns.rrset.from_text_list(question.name, TTL, "IN", kind, addresses)
            )
        return response  # no records of that type: NOERROR with no answer
