"""The ledger's domain: record ids, pseudonyms, canonical bytes, the hash chain and its verification."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from churnops.core import envelope
from churnops.core.ledger import (
    GENESIS,
    Chain,
    RecordIds,
    canonical,
    feature_bytes,
    pseudonym,
    record_time_ms,
    sign_checkpoint,
    verify_chain,
)
from churnops.errors import ConfigError
from churnops.io.secrets import load_secrets
from churnops.settings import Settings

pytestmark = pytest.mark.unit
KEY = b"k" * 32


def _ids(count: int) -> list[str]:
    ids = RecordIds()
    return [ids.next() for _ in range(count)]


def test_record_ids_are_uuid7_unique_and_time_ordered() -> None:
    ids = RecordIds()
    made = [ids.next(now_ns=1_700_000_000_000_000_000 + i * 1_000_000) for i in range(1000)]
    assert len(set(made)) == 1000
    assert made == sorted(made)
    assert all(len(i) == 36 and i[14] == "7" and i[19] in "89ab" for i in made)
    assert record_time_ms(made[0]) == 1_700_000_000_000


def test_record_ids_from_separate_processes_never_collide() -> None:
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        batches = pool.map(_ids, [20_000] * 3)
    flat = [i for batch in batches for i in batch]
    assert len(set(flat)) == len(flat)


def test_pseudonyms_are_keyed_stable_and_hide_the_id() -> None:
    assert pseudonym(KEY, "C0000042") == pseudonym(KEY, "C0000042")
    assert pseudonym(KEY, "C0000042") != pseudonym(b"x" * 32, "C0000042")
    assert "C0000042" not in pseudonym(KEY, "C0000042")
    assert len(pseudonym(KEY, "C0000042")) == 32


def _row(i: int) -> dict[str, Any]:
    return {
        "record_id": f"id-{i}",
        "kind": "prediction",
        "at_us": 1_700_000_000_000_000 + i,
        "subject": pseudonym(KEY, f"C{i}"),
        "probability": 0.1 + i / 100,
        "decision": i % 2 == 0,
        "payload": bytes([i]) * 10,
    }


def _chain(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    chain = Chain("w1")
    rows = [chain.link(_row(i)) for i in range(n)]
    checkpoint = sign_checkpoint(KEY, "w1", chain.seq, chain.head, 1).as_row()
    return rows, [checkpoint]


def test_an_intact_chain_verifies() -> None:
    rows, checkpoints = _chain(20)
    report = verify_chain("w1", rows, checkpoints, KEY)
    assert report.problem is None
    assert (report.records, report.head_seq, report.checkpoints) == (20, 20, 1)


def test_an_edited_probability_is_found_and_named() -> None:
    rows, checkpoints = _chain(20)
    rows[7]["probability"] = 0.99
    problem = verify_chain("w1", rows, checkpoints, KEY).problem
    assert problem is not None
    assert problem.record_id == "id-7"
    assert "edited" in problem.problem


def test_an_edited_payload_is_found_though_only_its_digest_is_hashed() -> None:
    rows, checkpoints = _chain(5)
    rows[2]["payload"] = b"forged"
    problem = verify_chain("w1", rows, checkpoints, KEY).problem
    assert problem is not None
    assert problem.record_id == "id-2"


def test_a_deleted_record_is_found() -> None:
    rows, checkpoints = _chain(20)
    del rows[5]
    problem = verify_chain("w1", rows, checkpoints, KEY).problem
    assert problem is not None
    assert problem.record_id == "id-6"
    assert "deleted" in problem.problem


def test_two_swapped_records_are_found() -> None:
    rows, checkpoints = _chain(20)
    rows[3]["seq"], rows[4]["seq"] = rows[4]["seq"], rows[3]["seq"]  # two rows trade places
    rows.sort(key=lambda row: row["seq"])  # what verification reads: ORDER BY seq
    problem = verify_chain("w1", rows, checkpoints, KEY).problem
    assert problem is not None
    assert problem.record_id == "id-4"
    assert "reordered" in problem.problem


def test_a_truncated_tail_after_a_checkpoint_is_found() -> None:
    rows, checkpoints = _chain(20)
    problem = verify_chain("w1", rows[:17], checkpoints, KEY).problem
    assert problem is not None
    assert "truncated" in problem.problem
    assert problem.seq == 18


def test_a_forged_checkpoint_is_found() -> None:
    rows, checkpoints = _chain(5)
    checkpoints[0]["head"] = GENESIS
    problem = verify_chain("w1", rows, checkpoints, KEY).problem
    assert problem is not None
    assert "signature" in problem.problem


def test_canonical_bytes_cover_every_field_but_the_chain() -> None:
    row = _chain(1)[0][0]
    assert canonical(row) == canonical({**row, "record_hash": "x", "prev_hash": "y"})
    assert canonical(row) != canonical({**row, "principal": "someone"})


def test_envelope_round_trip_and_shredding() -> None:
    master = envelope.derive_key(KEY, "wrap")
    data_key = envelope.new_data_key()
    aad = envelope.associated_data("subject", 3)
    wrapped = envelope.wrap_key(master, data_key, aad)
    assert envelope.unwrap_key(master, wrapped, aad) == data_key
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealed = envelope.seal(AESGCM(data_key), feature_bytes({"b": 1, "a": None}), aad)
    assert envelope.open_sealed(AESGCM(data_key), sealed, aad) == b'{"a":null,"b":1}'
    with pytest.raises(envelope.Unreadable):  # a payload moved to another customer does not open
        envelope.open_sealed(AESGCM(data_key), sealed, envelope.associated_data("other", 3))
    with pytest.raises(envelope.Unreadable):  # a destroyed key cannot be replaced by a new one
        envelope.open_sealed(AESGCM(envelope.new_data_key()), sealed, aad)


def test_embedded_secrets_are_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = Settings(churnops_home=tmp_path / "home")
    first, second = load_secrets(settings), load_secrets(settings)
    assert first == second
    assert len(first.ledger_key) >= 32
    assert first.generated == {"CHURNOPS_PSEUDONYM_KEY", "CHURNOPS_LEDGER_KEY", "CHURNOPS_API_KEY_PEPPER"}
    mode = stat.S_IMODE(os.stat(tmp_path / "home" / "secrets.json").st_mode)
    assert mode == 0o600
    assert len({first.wrapping_key, first.checkpoint_key, first.signing_secret_key, first.ledger_key}) == 4


def test_production_refuses_generated_secrets(tmp_path: Path) -> None:
    settings = Settings(churnops_home=tmp_path, APP_ENV="production")
    with pytest.raises(ConfigError, match="CHURNOPS_PSEUDONYM_KEY"):
        load_secrets(settings)


def test_the_sealers_inlined_prediction_row_is_the_generic_chain_link() -> None:
    """`Sealer.prediction_row` writes canonical bytes and the chain hash out by hand for speed:
    its rows must be the ones `Chain.link_values` makes of the same values, field for field."""
    import time as _time

    from churnops.core.ledger import FIELDS, Chain, feature_bytes, feature_hash, key_epoch
    from churnops.core.ledger_rows import Prediction, Sealer

    feature_key = os.urandom(64)
    sealer = Sealer(Chain("p-inline"), os.urandom(32), feature_key, os.urandom(32), 30)
    reference = Chain("p-inline")
    features = {"tenure": 3, "contract": "month-to-month", "charges": 70.5, "z": None}
    for i in range(20):
        p = Prediction(
            f"id-{i}", _time.time_ns() // 1000, f"r{i}", f"c{i % 3}", "key-1" if i % 2 else None,
            "churn", "4", "champion", "exp" if i % 2 else None, i if i % 2 else None, "served",
            0.1 + i / 50, bool(i % 3), 0.5, [("tenure", 0.25)], "online", features,
        )  # fmt: skip
        row = sealer.prediction_row(p)
        assert len(row) == len(FIELDS)
        expected = list(row)
        expected[FIELDS.index("writer_id")] = expected[FIELDS.index("seq")] = None
        expected[FIELDS.index("prev_hash")] = expected[FIELDS.index("record_hash")] = None
        assert reference.link_values(expected) == row
        assert row[FIELDS.index("feature_hash")] == feature_hash(feature_key, feature_bytes(features))
        assert row[FIELDS.index("key_epoch")] == key_epoch(p.at_us, 30)


def test_a_customers_unchanged_vector_is_sealed_once_per_key_and_a_new_one_afresh() -> None:
    """The sealer reuses a vector's ciphertext while the hot path hands over the same vector object
    under the same data key (the same plaintext, key, nonce and associated data: the same bytes).
    A replaced vector, an erased customer and a new key period are each sealed afresh, and every
    payload opens to the vector its record scored."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from churnops.core.ledger import FIELDS, Chain, feature_bytes
    from churnops.core.ledger_rows import Prediction, Sealer

    wrapping = os.urandom(32)
    sealer = Sealer(Chain("p-reuse"), os.urandom(32), os.urandom(64), wrapping, 1)
    keys: dict[tuple[str, int], bytes] = {}

    def seal(features: dict[str, object], at_us: int) -> tuple[bytes, str]:
        p = Prediction(
            f"id-{at_us}", at_us, "r", "c1", None, "churn", "1", "champion", None, None, "served",
            0.3, False, 0.5, [], "online", features,
        )  # fmt: skip
        row = sealer.prediction_row(p)
        subject, epoch = row[FIELDS.index("subject")], row[FIELDS.index("key_epoch")]
        for made in sealer.take_new_keys():
            aad = envelope.associated_data(made["subject"], made["epoch"])
            keys[(made["subject"], made["epoch"])] = envelope.unwrap_key(wrapping, made["wrapped"], aad)
        aead = AESGCM(keys[(subject, epoch)])
        payload = row[FIELDS.index("payload")]
        opened = envelope.open_sealed(aead, payload, envelope.associated_data(subject, epoch))
        assert opened == feature_bytes(features)
        return payload, subject

    day_us = 86_400_000_000
    vector = {"tenure": 3, "charges": 70.5}
    first, subject = seal(vector, 10)
    assert seal(vector, 20)[0] == first  # same object, same key: the ciphertext is reused
    replaced = {"tenure": 4, "charges": 70.5}
    assert seal(replaced, 30)[0] != first  # the store replaced the vector: sealed afresh
    again = seal(replaced, 40)[0]
    sealer.forget(subject)  # erasure: the key is gone, so is its ciphertext
    erased = seal(replaced, 50)[0]
    assert erased != again
    assert seal(replaced, day_us + 60)[0] != erased  # a new key period, a new key
