"""Signed model files (carbon/model_signature.py and `carbon-ai model`): what the fleet key signed for a vehicle's
class verifies; an unsigned, altered, foreign-key or other-class model is refused with one line naming the fix."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from carbon_ai_nodes.carbon import model_signature as ms
from carbon_ai_nodes.carbon.model_file import SHIPPED_MODEL
from carbon_ai_nodes.cli import main as cli
from carbon_ai_nodes.common.errors import ConfigError, ModelError

TRUCK = "haul truck"


@pytest.fixture
def fleet(tmp_path):
    """A fleet key pair and a copy of the shipped model signed for haul trucks."""
    ms.generate_key_pair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    model = tmp_path / "residual.onnx"
    shutil.copyfile(SHIPPED_MODEL, model)
    ms.sign_model(model, ms.load_private_key(tmp_path / "fleet.key"), [TRUCK],
                  training={"vehicles": 3, "hours": 12.5}, validation_error_pct=3.1)
    return tmp_path, model, ms.load_public_key(tmp_path / "fleet.pub")


def altered_model(src, dst) -> None:
    """A valid ONNX model with other bytes than ``src``: one more metadata property."""
    m = onnx.load(str(src))
    m.metadata_props.add(key="note", value="retrained elsewhere")
    onnx.save(m, str(dst))


def test_a_model_signed_for_the_vehicles_class_verifies(fleet):
    _, model, public = fleet
    manifest = ms.verify_model(model, public, [TRUCK])
    assert manifest["model_id"].startswith("residual-") and manifest["applies_to"] == [TRUCK]
    assert manifest["training"] == {"vehicles": 3, "hours": 12.5} and manifest["validation_error_pct"] == 3.1


@pytest.mark.parametrize("damage, words", [
    ("unsigned", "unsigned (no residual.onnx.manifest.json beside it); sign it with `carbon-ai model sign"),
    ("manifest edited", "the signature does not verify with this vehicle's public key"),
    ("other key", "the signature does not verify with this vehicle's public key"),
    ("model replaced", "the model file changed after it was signed"),
    ("other class", "signed for ['haul truck'], not for ['delivery van']"),
    ("manifest garbage", "unreadable manifest"),
    ("signature garbage", "the signature does not verify"),
])
def test_untrusted_models_are_refused_with_the_reason(fleet, damage, words):
    tmp_path, model, public = fleet
    manifest = ms.manifest_path(model)
    classes = [TRUCK]
    if damage == "unsigned":
        manifest.unlink()
    elif damage == "manifest edited":  # someone widens what the model may run on
        signed = json.loads(manifest.read_text())
        signed["manifest"]["applies_to"] = ["*"]
        manifest.write_text(json.dumps(signed))
    elif damage == "other key":
        ms.generate_key_pair(tmp_path / "other.key", tmp_path / "other.pub")
        ms.sign_model(model, ms.load_private_key(tmp_path / "other.key"), [TRUCK])
    elif damage == "model replaced":
        altered_model(SHIPPED_MODEL, model)
    elif damage == "other class":
        classes = ["delivery van"]
    elif damage == "manifest garbage":
        manifest.write_bytes(b"\xff\xfe not json")
    else:
        signed = json.loads(manifest.read_text())
        signed["signature_ed25519"] = "!!"
        manifest.write_text(json.dumps(signed))
    with pytest.raises(ModelError) as exc:
        ms.verify_model(model, public, classes)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_a_model_signed_for_every_class_runs_anywhere(fleet):
    tmp_path, model, public = fleet
    ms.sign_model(model, ms.load_private_key(tmp_path / "fleet.key"), ["*"])
    assert ms.verify_model(model, public, ["delivery van", TRUCK])["applies_to"] == ["*"]


def test_bad_keys_and_empty_classes_are_config_errors(fleet, tmp_path):
    _, model, _ = fleet
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="junk.pub: not a readable Ed25519 public key"):
        ms.load_public_key(tmp_path / "junk.pub")
    with pytest.raises(ConfigError, match="not a readable Ed25519 private key"):
        ms.load_private_key(tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="applies_to is empty"):
        ms.sign_model(model, ms.load_private_key(tmp_path / "fleet.key"), [" "])
    with pytest.raises(FileExistsError):  # a fleet key is never overwritten
        ms.generate_key_pair(tmp_path / "fleet.key", tmp_path / "x.pub")
    assert (tmp_path / "fleet.key").stat().st_mode & 0o077 == 0


def test_the_model_command_signs_and_verifies(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copyfile(SHIPPED_MODEL, model)
    assert cli(["model", "keygen", "--out", str(tmp_path)]) == 0
    assert cli(["model", "keygen", "--out", str(tmp_path)]) == 1  # refuses to overwrite the fleet key
    key, pub = str(tmp_path / "fleet_ed25519.key"), str(tmp_path / "fleet_ed25519.pub")
    assert cli(["model", "verify", str(model), "--public-key", pub]) == 1
    assert "unsigned" in capsys.readouterr().err
    assert cli(["model", "sign", str(model), "--key", key, "--applies-to", TRUCK, "--training", '{"rows": 9}']) == 0
    assert cli(["model", "verify", str(model), "--public-key", pub, "--vehicle-class", TRUCK]) == 0
    assert "verified: m-" in capsys.readouterr().out
    assert cli(["model", "verify", str(model), "--public-key", pub, "--vehicle-class", "van"]) == 1
    assert cli(["model", "sign", str(model), "--key", key, "--applies-to", TRUCK, "--training", "[1]"]) == 1
    assert "must be a JSON object" in capsys.readouterr().err
