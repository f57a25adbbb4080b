"""Signed model files: only models the fleet's key signed, for this vehicle's class, are run (pure; no ROS).

A model ``m.onnx`` travels with ``m.onnx.manifest.json``: a manifest (model id, sha256 of the model's bytes, the
vehicle classes it applies to, what it was trained on, its validation error) and an Ed25519 signature over the
manifest's canonical JSON. The fleet keeps the private key; each vehicle has the public key
(``carbon_inference.model_public_key``). :func:`verify_model` refuses an unsigned model, a manifest altered or
signed with another key, a model whose bytes changed after signing, and a model signed for other vehicle
classes, each with one line naming the file and the fix. The ``cryptography`` package does the Ed25519
arithmetic (RFC 8032); nothing here is home-made cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from carbon_ai_nodes.common.errors import ConfigError, ModelError

SCHEMA = "carbon_ai.model_manifest"
SCHEMA_VERSION = 1
ANY_CLASS = "*"  # applies_to entry: every vehicle class


def manifest_path(model_path: str | Path) -> Path:
    """Where the signed manifest of ``model_path`` lives: beside it, ``<model file>.manifest.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".manifest.json")


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def generate_key_pair(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new fleet key pair: the private key as PKCS#8 PEM (mode 0600), the public key as PEM."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a fleet key
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    Path(public_path).write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The fleet's private key (PEM); ConfigError naming the file if it is missing or not an Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable Ed25519 private key ({type(exc).__name__}: {exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """A fleet public key (PEM); ConfigError naming the file if it is missing or not an Ed25519 key."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable Ed25519 public key ({type(exc).__name__}: {exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def sign_model(model_path: str | Path, private_key: Ed25519PrivateKey, applies_to: Sequence[str], *,
               training: Mapping[str, Any] | None = None, validation_error_pct: float = math.nan) -> Path:
    """Write the signed manifest of ``model_path`` and return its path. ``applies_to``: the vehicle classes
    (profile names, or ``*``) it may run on; ``training``: a summary of its training data (JSON-able);
    ``validation_error_pct``: its validation error, % (NaN = not given)."""
    from carbon_ai_nodes.carbon.model_file import read_model

    model = read_model(model_path)  # an invalid model is not worth signing
    classes = sorted({c.strip() for c in applies_to if c.strip()})
    if not classes:
        raise ConfigError("applies_to is empty: name the vehicle classes (profile names) or '*' for all")
    manifest = {"schema": SCHEMA, "version": SCHEMA_VERSION, "model_id": model.model_id, "file": model.path.name,
                "sha256": model.sha256, "applies_to": classes, "training": dict(training or {}),
                "validation_error_pct": validation_error_pct if math.isfinite(validation_error_pct) else None}
    signature = private_key.sign(_canonical(manifest))
    out = manifest_path(model_path)
    out.write_text(json.dumps({"manifest": manifest, "signature_ed25519": base64.b64encode(signature).decode()},
                              indent=2) + "\n")
    return out


def verify_model(model_path: str | Path, public_key: Ed25519PublicKey, vehicle_classes: Sequence[str]) -> dict:
    """The verified manifest of ``model_path`` for vehicles of ``vehicle_classes`` (profile names); ModelError
    with the file and the fix when it is unsigned, altered, signed by another key, or for other classes."""
    mpath = manifest_path(model_path)
    try:
        signed = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ModelError(f"{model_path}: unsigned (no {mpath.name} beside it); sign it with "
                         f"`carbon-ai model sign {model_path} --key FLEET_KEY --applies-to CLASS`") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{mpath}: unreadable manifest ({type(exc).__name__}); sign the model again") from None
    manifest = signed.get("manifest") if isinstance(signed, dict) else None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ModelError(f"{mpath}: not a carbon_ai model manifest; sign the model again")
    try:
        public_key.verify(base64.b64decode(signed.get("signature_ed25519", ""), validate=True), _canonical(manifest))
    except (InvalidSignature, ValueError, TypeError):
        raise ModelError(f"{mpath}: the signature does not verify with this vehicle's public key: the manifest was "
                         "altered or signed with another fleet's key") from None
    if manifest.get("version") != SCHEMA_VERSION:
        raise ModelError(f"{mpath}: manifest version {manifest.get('version')!r}, this build reads {SCHEMA_VERSION}")
    try:
        actual = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelError(f"{model_path}: cannot read model ({exc.strerror or exc})") from None
    if actual != manifest.get("sha256"):
        signed_hash = str(manifest.get("sha256"))[:12]
        raise ModelError(f"{model_path}: its sha256 {actual[:12]}... is not the signed {signed_hash}...: the model "
                         "file changed after it was signed")
    applies = manifest.get("applies_to") or []
    if ANY_CLASS not in applies and not set(vehicle_classes) <= set(applies):
        raise ModelError(f"{model_path}: signed for {applies}, not for {sorted(set(vehicle_classes) - set(applies))}")
    return manifest
