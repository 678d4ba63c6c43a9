"""Differential harness: real upstream servers (nginx, Node, Python) behind the gateway.

`recorder` holds the recording relay and a strict HTTP/1.1 request parser,
`upstreams` starts the servers, `harness` sends attacks and checks what each
upstream received and executed against what the gateway decided.
"""
