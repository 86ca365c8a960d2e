"""The relay's sans-I/O pieces: message vectors shared with the firmware, sentences, tokens."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pocketgpt.errors import PocketError
from pocketgpt.relay import protocol as P
from pocketgpt.relay.auth import TokenStore, bearer

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "docs" / "protocol_vectors.json").read_text("utf-8"))


@pytest.mark.parametrize("vec", VECTORS["client"], ids=lambda v: v["name"])
def test_client_vectors_parse_as_documented(vec: dict) -> None:
    if "error" in vec:
        with pytest.raises(P.ProtocolError) as err:
            P.parse_client(vec["wire"])
        assert err.value.code == vec["error"]
        assert err.value.code in P.ERROR_CODES
        assert err.value.request_id == vec.get("id")
        return
    msg = P.parse_client(vec["wire"])
    view = {"type": msg.type, "version": msg.version, "extension": msg.wants_extension, "state": msg.state,
            "mode": msg.mode, "text": msg.text, "session_id": msg.session_id, "reason": msg.reason,
            "id": msg.request_id, "prompt": msg.prompt, "max_tokens": msg.params.max_tokens,
            "temperature": msg.params.temperature, "top_k": msg.params.top_k, "top_p": msg.params.top_p,
            "seed": msg.params.seed, "greedy": msg.params.greedy, "stop": list(msg.params.stop)}
    for key, want in vec["expect"].items():
        assert view[key] == want, f"{vec['name']}: {key}"


@pytest.mark.parametrize("vec", [v for v in VECTORS["client"] if "fields" in v], ids=lambda v: v["name"])
def test_client_vector_wire_is_the_compact_encoding_of_its_fields(vec: dict) -> None:
    """What the firmware must build: type first, then the fields in order, compact, raw UTF-8."""
    kind = "abort" if vec["name"].startswith("abort") else "pg.generate"
    built = json.dumps({"type": kind, **vec["fields"]}, ensure_ascii=False, separators=(",", ":"))
    assert built == vec["wire"]


@pytest.mark.parametrize("vec", VECTORS["server"], ids=lambda v: v["name"])
def test_server_vectors_are_built_byte_for_byte(vec: dict) -> None:
    args = dict(vec["build"])
    fn = getattr(P, args.pop("fn"))
    assert fn(**args) == vec["wire"]
    parsed = json.loads(vec["wire"])
    assert isinstance(parsed["type"], str)


def test_server_hello_has_what_stock_firmware_needs() -> None:
    hello = json.loads(P.server_hello("abc"))
    assert hello["transport"] == "websocket" and hello["session_id"] == "abc"
    assert hello["audio_params"]["sample_rate"] == 24000 and hello["audio_params"]["frame_duration"] == 60
    assert "features" not in hello  # stock devices never see the extension


def test_builders_refuse_undocumented_codes_and_reasons() -> None:
    with pytest.raises(ValueError):
        P.error("oops", "x")
    with pytest.raises(ValueError):
        P.done("r", "crashed", 1, 1)


@pytest.mark.parametrize("case", VECTORS["sentences"], ids=lambda c: "".join(c["pieces"])[:20])
def test_sentences_come_out_as_soon_as_they_are_complete(case: dict) -> None:
    sp = P.SentenceSplitter()
    got: list[str] = []
    for piece in case["pieces"]:
        got += sp.feed(piece)
    rest = sp.flush()
    if rest:
        got.append(rest)
    assert got == case["sentences"]


def test_a_sentence_is_released_before_the_reply_ends() -> None:
    sp = P.SentenceSplitter()
    assert sp.feed("The sky is blue.") == []     # could still be "blue.com": wait for what follows
    assert sp.feed(" Grass") == ["The sky is blue."]


@pytest.mark.parametrize("garbage", ["\ud800", "{" * 100000, "1e999999", "null", '{"type": 5}', b"\xff\xfe"])
def test_parser_survives_garbage(garbage: str | bytes) -> None:
    with pytest.raises(P.ProtocolError):
        P.parse_client(garbage)


# ---- tokens -----------------------------------------------------------------------------------

def test_tokens_are_stored_hashed_and_verify(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token = store.add("aa:bb:cc:dd:ee:ff")
    assert token.startswith("pgt_")
    on_disk = (tmp_path / "devices.json").read_text() + (tmp_path / "relay.secret").read_bytes().hex()
    assert token not in on_disk and token.split("_", 2)[2] not in on_disk
    assert oct((tmp_path / "devices.json").stat().st_mode & 0o777) == "0o600"
    assert store.verify(token) == "aa:bb:cc:dd:ee:ff"
    assert store.token_for("aa:bb:cc:dd:ee:ff") == token        # the OTA call can hand it out again
    assert TokenStore(tmp_path).verify(token) == "aa:bb:cc:dd:ee:ff"  # a second process agrees
    for wrong in (None, "", token[:-1] + ("A" if token[-1] != "A" else "B"), "pgt_x_y", "Bearer " + token, "x" * 500):
        assert store.verify(wrong) is None


def test_revoked_token_stays_dead_even_after_re_adding(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    old = store.add("dev1")
    other = store.add("dev2")
    TokenStore(tmp_path).revoke("dev1")        # another process (the CLI) revokes it
    assert store.verify(old) is None           # the running relay notices (file mtime changed)
    assert store.token_for("dev1") is None
    new = store.add("dev1")
    assert new != old and store.verify(new) == "dev1" and store.verify(old) is None
    assert store.verify(other) == "dev2"


def test_token_store_refuses_bad_ids_and_duplicates(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.add("dev1")
    with pytest.raises(PocketError, match="already has a token"):
        store.add("dev1")
    for bad in ("", "a b", "../etc", "x" * 65, "dev\n1"):
        with pytest.raises(PocketError, match="not valid"):
            store.add(bad)
    with pytest.raises(PocketError, match="not registered"):
        store.revoke("nobody")


def test_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text("{not json")
    with pytest.raises(PocketError, match="devices.json is damaged"):
        TokenStore(tmp_path).verify("pgt_a_b")


def test_bearer_header_forms() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc" and bearer("abc") == "abc"
    assert bearer(None) is None and bearer("Bearer ") is None


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POCKETGPT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pocketgpt", "token", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_token_cli_add_show_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "state"
    added = _cli(home, "add", "aa:bb:cc:dd:ee:01", "--json")
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout)["token"]
    assert json.loads(added.stdout)["device_id"] == "aa:bb:cc:dd:ee:01"
    assert _cli(home, "show", "aa:bb:cc:dd:ee:01").stdout.strip() == token
    assert json.loads(_cli(home, "list", "--json").stdout)["devices"] == ["aa:bb:cc:dd:ee:01"]
    again = _cli(home, "add", "aa:bb:cc:dd:ee:01")
    assert again.returncode == 1 and "already has a token" in again.stderr and "Traceback" not in again.stderr
    assert _cli(home, "revoke", "aa:bb:cc:dd:ee:01").returncode == 0
    gone = _cli(home, "show", "aa:bb:cc:dd:ee:01")
    assert gone.returncode == 1 and "not registered" in gone.stderr
    bad = _cli(home, "add", "no spaces please")
    assert bad.returncode == 1 and "not valid" in bad.stderr


def test_every_error_code_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text("utf-8")
    table = set(re.findall(r"^\| `([a-z_]+)` \|", doc, flags=re.M))
    assert set(P.ERROR_CODES) <= table, set(P.ERROR_CODES) - table
