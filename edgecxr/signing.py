"""Ed25519 signatures over sidecars (the ``cryptography`` package, imported only when used).

The sidecar holds the artifact's sha256 and its verification verdict, so a signature over the
sidecar's exact bytes covers both. ``edgecxr export --sign KEY`` writes ``<artifact>.edgecxr.sig``;
a device that lists trusted public keys (``load(..., trusted_keys=[...])`` or the environment
variable ``EDGECXR_TRUSTED_KEYS``, paths separated by ``:``) accepts only artifacts signed by one of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecxr.errors import ArtifactError, EdgeCXRError
from edgecxr.sidecar import sidecar_path

SIG_SUFFIX = ".edgecxr.sig"
ENV = "EDGECXR_TRUSTED_KEYS"


def signature_path(artifact: Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIG_SUFFIX)


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise EdgeCXRError("signatures need the cryptography package: pip install 'edgecxr[sign]'") from exc
    return serialization, ed25519, InvalidSignature


def generate_keypair(private_out: Path, public_out: Path) -> None:
    """Write a new Ed25519 private key (PEM, mode 0600) and its public key (PEM)."""
    serialization, ed25519, _ = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    Path(private_out).write_bytes(priv)
    os.chmod(private_out, 0o600)
    Path(public_out).write_bytes(pub)


def _pem(k) -> bytes:
    if isinstance(k, bytes):
        return k
    p = Path(k)
    if not p.is_file():
        raise ArtifactError(f"{p}: no such key file.")
    return p.read_bytes()


def sign_artifact(artifact: Path, private_key) -> Path:
    """Sign the artifact's sidecar bytes with an Ed25519 private key (PEM bytes or path)."""
    serialization, ed25519, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(_pem(private_key), password=None)
    except (ValueError, TypeError) as exc:
        raise EdgeCXRError(f"cannot read the private key ({exc}); make one with `edgecxr keygen`.") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EdgeCXRError("the signing key must be an Ed25519 private key (`edgecxr keygen` makes one).")
    sig = key.sign(sidecar_path(artifact).read_bytes())
    out = signature_path(artifact)
    from edgecxr.artifact import atomic_write_bytes

    atomic_write_bytes(out, sig.hex().encode() + b"\n")
    return out


def check_signature(artifact: Path, trusted_keys: list) -> None:
    """Raise :class:`ArtifactError` unless the sidecar carries a valid signature by one of ``trusted_keys``."""
    serialization, ed25519, InvalidSignature = _crypto()
    sig_file = signature_path(artifact)
    if not sig_file.is_file():
        raise ArtifactError(f"{artifact}: not signed ({sig_file.name} missing) and this device accepts only signed "
                            "artifacts. Export it with `edgecxr export --sign KEY`.")
    try:
        sig = bytes.fromhex(sig_file.read_text().strip())
    except ValueError:
        raise ArtifactError(f"{sig_file}: not a signature file.") from None
    data = sidecar_path(artifact).read_bytes()
    for k in trusted_keys:
        try:
            pub = serialization.load_pem_public_key(_pem(k))
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"trusted key {k if not isinstance(k, bytes) else '<bytes>'} is not a PEM public key ({exc}).") from exc
        if not isinstance(pub, ed25519.Ed25519PublicKey):
            continue
        try:
            pub.verify(sig, data)
            return
        except InvalidSignature:
            continue
    raise ArtifactError(f"{artifact}: the signature does not match any trusted key (sidecar or signature altered, "
                        "or signed by an unknown key). Do not use it for patients.")


def trusted_keys_from_env() -> list[Path]:
    v = os.environ.get(ENV, "").strip()
    return [Path(p) for p in v.split(os.pathsep) if p]
