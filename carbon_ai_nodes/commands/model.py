"""Signed model files for the fleet: ``keygen`` makes the fleet key pair, ``sign`` writes a model's signed
manifest (model id, sha256, the vehicle classes it applies to, training summary, validation error), ``verify``
checks a model as a vehicle does before loading it (carbon_inference's ``model_public_key``).
"""

from __future__ import annotations

import argparse
import json
import math

HELP = "fleet model signing: keygen, sign, verify (Ed25519)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The keygen, sign and verify actions."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    keygen = actions.add_parser("keygen", help="write a new fleet key pair (private: mode 0600, never overwritten)")
    keygen.add_argument("--out", required=True, help="directory for fleet_ed25519.key and fleet_ed25519.pub")
    sign = actions.add_parser("sign", help="write MODEL.manifest.json, signed with the fleet's private key")
    sign.add_argument("model", help="residual model .onnx")
    sign.add_argument("--key", required=True, help="the fleet's private key (PEM)")
    sign.add_argument("--applies-to", nargs="+", required=True, metavar="CLASS",
                      help="vehicle classes (profile names) it may run on; '*' = every class")
    sign.add_argument("--training", default="{}", help="training data summary as a JSON object")
    sign.add_argument("--validation-error-pct", type=float, default=math.nan, help="validation error, %%")
    verify = actions.add_parser("verify", help="check MODEL as a vehicle does before loading it")
    verify.add_argument("model", help="residual model .onnx")
    verify.add_argument("--public-key", required=True, help="the fleet's public key (PEM)")
    verify.add_argument("--vehicle-class", nargs="*", default=[], metavar="CLASS",
                        help="the vehicle's profile name(s); none = check signature and hash only")


def run(args: argparse.Namespace) -> int:
    """Carry out the action; errors are CarbonAIError lines (exit 1)."""
    from pathlib import Path

    from carbon_ai_nodes.carbon import model_signature as ms
    from carbon_ai_nodes.common.errors import ConfigError

    if args.action == "keygen":
        out = Path(args.out)
        if not out.is_dir():
            raise ConfigError(f"--out {out}: not a directory")
        private, public = out / "fleet_ed25519.key", out / "fleet_ed25519.pub"
        if private.exists():
            raise ConfigError(f"{private} exists: a fleet key is never overwritten (move it away first)")
        ms.generate_key_pair(private, public)
        print(f"private key {private} (keep it off the vehicles), public key {public} "
              "(carbon_inference.model_public_key)")
    elif args.action == "sign":
        try:
            training = json.loads(args.training)
        except ValueError as exc:
            raise ConfigError(f"--training {args.training!r}: not JSON ({exc})") from None
        if not isinstance(training, dict):
            raise ConfigError(f"--training {args.training!r}: must be a JSON object")
        path = ms.sign_model(args.model, ms.load_private_key(args.key), args.applies_to, training=training,
                             validation_error_pct=args.validation_error_pct)
        print(f"signed: {path}")
    else:
        manifest = ms.verify_model(args.model, ms.load_public_key(args.public_key), args.vehicle_class)
        print(f"verified: {manifest['model_id']} for {', '.join(manifest['applies_to'])}")
    return 0
