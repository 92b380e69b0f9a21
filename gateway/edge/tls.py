"""TLS on the gateway's own listeners: the server context, loaded from files and reloaded on SIGHUP.

The context starts from Python's server defaults (``ssl.create_default_context``), with TLS 1.2 as
the oldest version and, for TLS 1.2, only forward-secret AEAD suites (ECDHE with AES-GCM or
ChaCha20-Poly1305, as Mozilla's "intermediate" profile; TLS 1.3 suites are all AEAD); no
compression, no renegotiation, and ALPN ``http/1.1`` (a WebSocket upgrade is HTTP/1.1). A reload
builds a new context; connections opened before it keep theirs, which is how existing sessions go
on undisturbed while new handshakes present the new certificate. A reload that fails keeps the
context in use.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

import trio
from cryptography import x509

from gateway.config import ConfigError

log = logging.getLogger("gateway.tls")

ALPN: Final = ["http/1.1"]
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
# Reading two small files; a stuck network file system must not hold a reload forever.
RELOAD_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Loaded:
    context: ssl.SSLContext
    summary: str  # subject and expiry of the certificate, for the logs


def load(cert_file: str, key_file: str) -> Loaded:
    """A server context for the PEM certificate chain and key; ConfigError saying what is wrong."""
    chain = _read(cert_file, "tls_cert_file")
    key = _read(key_file, "tls_key_file")
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise ConfigError(f"tls_cert_file: {cert_file} holds no PEM certificate") from None
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError(f"tls_key_file: {key_file} holds no PEM private key")
    if b"BEGIN ENCRYPTED PRIVATE KEY" in key or b"Proc-Type: 4,ENCRYPTED" in key:
        raise ConfigError(
            f"tls_key_file: {key_file} is encrypted; the gateway reads an unencrypted key "
            "(protect it with file permissions instead)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        reason = "the key does not match the certificate" if "MISMATCH" in str(exc) else str(exc)
        raise ConfigError(f"tls_cert_file/tls_key_file ({cert_file}, {key_file}): {reason}") from None
    except OSError as exc:  # replaced between the read above and this one
        raise ConfigError(f"tls_cert_file/tls_key_file: {exc}") from None
    leaf = certificates[0]
    summary = (
        f"{leaf.subject.rfc4514_string()}, valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
        f"({cert_file})"
    )
    return Loaded(context, summary)


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _no_password() -> NoReturn:
    # Never OpenSSL's prompt on the terminal: an encrypted key is refused above; this is a backstop.
    raise ConfigError("the TLS key is encrypted")


class ServerTls:
    """The listeners' current TLS context; :meth:`wrap` a connection, :meth:`reload` on SIGHUP."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        loaded = load(cert_file, key_file)  # ConfigError at start: no listener opens without it
        self.context = loaded.context
        self.summary = loaded.summary

    def wrap(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        """A TLS server stream on ``stream`` with the context of this moment (kept for its life)."""
        return trio.SSLStream(stream, self.context, server_side=True)

    async def reload(self) -> bool:
        """Load the files again; on success new handshakes use them. False (logged) keeps the old."""
        with trio.move_on_after(RELOAD_TIMEOUT):
            try:
                loaded = await trio.to_thread.run_sync(
                    load, self.cert_file, self.key_file, abandon_on_cancel=True
                )
            except ConfigError as exc:
                log.error("TLS reload failed, the certificate in use stays: %s", exc)
                return False
            self.context, self.summary = loaded.context, loaded.summary
            log.info("TLS certificate reloaded: %s", loaded.summary)
            return True
        log.error(
            "TLS reload failed, the certificate in use stays: reading %s and %s took over %.0f s",
            self.cert_file,
            self.key_file,
            RELOAD_TIMEOUT,
        )
        return False


def make_tls(cert_file: str | None, key_file: str | None) -> ServerTls | None:
    """The listeners' TLS when both files are set (checks refused one without the other)."""
    if cert_file and key_file:
        return ServerTls(cert_file, key_file)
    return None
