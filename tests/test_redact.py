"""Redaction by key and by pattern: unit tests calling the redactor directly."""

from collections import Counter
from typing import Any

import orjson
import pytest

from shipper.transform.redact.detectors import BUILTIN_DETECTORS, card_number_ok, luhn_ok
from shipper.transform.redact.redactor import MASK, Redactor
from shipper.transform.redact.secret_keys import DEFAULT_SECRET_KEYS, KeyRules, normalise_key

SECRET = "hunter2-very-secret-value"
HASH_KEY = b"k" * 32


def redactor(
    keys: dict[str, Any] | None = None, action: Any = "mask", counters: Counter[str] | None = None
) -> Redactor:
    return Redactor(
        keys=dict.fromkeys(DEFAULT_SECRET_KEYS, "mask") if keys is None else keys,
        detectors=[(d, action) for d in BUILTIN_DETECTORS],
        counters=Counter() if counters is None else counters,
        hash_key=HASH_KEY,
    )


def text_of(message: str, **kwargs: Any) -> str:
    out: str = redactor(**kwargs)({"message": message})["message"]
    return out


@pytest.mark.parametrize("key", ["api_key", "apiKey", "api-key", "API_KEY", "Api.Key"])
def test_spellings_of_one_key_all_match(key: str) -> None:
    assert normalise_key(key) == "apikey"
    assert redactor()({key: SECRET}) == {key: MASK}


def test_a_key_ending_in_a_secret_name_matches_and_the_longest_rule_wins() -> None:
    rules = KeyRules({"token": "mask", "access_token": "hash", "password": "remove"})
    assert rules.action("db_password") == "remove"
    assert rules.action("X-Auth-Token") == "mask"
    assert rules.action("oauthAccessToken") == "hash"
    assert rules.action("token_count") is None  # "tokencount" does not end with "token"
    assert rules.action("max_tokens") is None


def test_any_depth_and_inside_lists() -> None:
    record = {"a": [{"b": {"Password": SECRET}}, [{"token": SECRET}]], "ok": 1}
    counters: Counter[str] = Counter()
    redactor(counters=counters)(record)
    assert SECRET not in orjson.dumps(record).decode()
    assert record["ok"] == 1 and counters["redacted_key"] == 2


def test_key_actions() -> None:
    keys: dict[str, Any] = {
        "password": "remove",
        "card_number": "partial",
        "user": "hash",
        "token": "mask",
    }
    out = redactor(keys)(
        {"password": SECRET, "card_number": "4111111111111111", "user": "ana", "token": {"x": 1}}
    )
    assert "password" not in out
    assert out["card_number"] == "****1111"
    assert out["token"] == MASK  # a whole object under a secret key goes
    assert out["user"].startswith("hmac-sha256:") and "ana" not in out["user"]
    assert redactor({"user": "hash"})({"user": "ana"})["user"] == out["user"]  # stable
    assert redactor({"card_number": "partial"})({"card_number": "12345"}) == {"card_number": MASK}


def test_hash_needs_a_key() -> None:
    with pytest.raises(ValueError, match="hash key"):
        Redactor(keys={"user": "hash"}, detectors=[], counters=Counter())


def test_deep_nesting_does_not_recurse() -> None:
    record: dict[str, Any] = {"password": SECRET, "note": "mail ana@example.com"}
    innermost = record
    for _ in range(5000):
        record = {"n": [record]}
    redactor()(record)
    assert innermost == {"password": MASK, "note": "mail [REDACTED:email]"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 exp 12/28", "card [REDACTED:credit_card] exp 12/28"),
        ("card 4111-1111-1111-1111.", "card [REDACTED:credit_card]."),
        ("cc=5500005555555559;", "cc=[REDACTED:credit_card];"),
        ("amex 3782 822463 10005", "amex [REDACTED:credit_card]"),
        ("order 2231 4111 1111 1111 1111 done", "order 2231 [REDACTED:credit_card] done"),
        ("mail Ana.Bell+x@Example.co.uk now", "mail [REDACTED:email] now"),
        ("ssn 123-45-6789 and 123 45 6789", "ssn [REDACTED:us_ssn] and [REDACTED:us_ssn]"),
        (
            "t eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "t [REDACTED:jwt]",
        ),
        ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED:aws_access_key_id] used"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws_secret_access_key]",
        ),
        ("Authorization: Bearer abcdef0123456789abcdef", "Authorization: Bearer [REDACTED:bearer]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED:basic_auth]"),
        (
            "k -----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY----- tail",
            "k [REDACTED:private_key] tail",
        ),
        ("cut -----BEGIN PRIVATE KEY-----\nMIIabc", "cut [REDACTED:private_key]"),
        (
            "db postgres://admin:s3cr3t@db:5432/x",
            "db postgres://[REDACTED:url_credentials]@db:5432/x",
        ),
        (
            "git https://ghp_abcdefghijklmnop1234@github.com/o/r",
            "git https://[REDACTED:url_credentials]@github.com/o/r",
        ),
        ("login password=hunter2 user=bob", "login password=[REDACTED:secret_pair] user=bob"),
        # JSON kept as text: the key rule replaces the value.
        ('body {"passwd": "x y", "n": 1}', 'body {"passwd": "[REDACTED]", "n": 1}'),
        ("retry with token: abc123", "retry with token: [REDACTED:secret_pair]"),
    ],
)
def test_each_detector_finds_its_secret(text: str, expected: str) -> None:
    assert text_of(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order id 1234567890123456 shipped",  # no card prefix
        "order 4111111111111112 shipped",  # a Visa prefix, but Luhn fails
        "trace 550e8400-e29b-41d4-a716-446655440000",
        "trace 54057679-4441-4048-8adf-41f022a2f378",  # 5405767944414048 passes Luhn
        "at 2026-11-25T18:01:47.123Z epoch 1732550400123 and 1732550400",
        "version v1.2.3 and 2.31.0, build 20261125.4",
        "from 10.0.12.7:5432 sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15",
        "call +1 555 123 4567 took 1532 ms",
        "basic authentication failed",
        "Bearer authentication failed",
        "unexpected token: '}' at 3",
        "password=null token=false",
        "ssn-like 000-12-3456 666-12-3456 912-12-3456 123-00-4567",
        "user ana at example dot com",
        "deploying from aws pipeline commit: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
        "started in pwd=/srv/app",
        "-----BEGIN CERTIFICATE----- MIIB",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    counters: Counter[str] = Counter()
    assert text_of(text, counters=counters) == text
    assert not counters


def test_detector_actions_and_stable_pseudonyms() -> None:
    assert text_of("mail ana@example.com", action="remove") == "mail "
    assert text_of("card 4111 1111 1111 1111", action="partial") == "card ****1111"
    first = text_of("mail ana@example.com", action="hash")
    # The same address however it is spelled: one pseudonym, so a user still correlates.
    assert first == text_of("mail ANA@Example.com", action="hash")
    assert first.startswith("mail hmac-sha256:") and "ana" not in first
    assert text_of("card 4111-1111-1111-1111", action="hash") == text_of(
        "card 4111111111111111", action="hash"
    )


def test_numbers_and_lists_are_searched_too() -> None:
    counters: Counter[str] = Counter()
    out = redactor(counters=counters)(
        {"cc": 4111111111111111, "ids": [1234567890123456, "x ana@example.com"], "n": 5}
    )
    assert out == {
        "cc": "[REDACTED:credit_card]",
        "ids": [1234567890123456, "x [REDACTED:email]"],
        "n": 5,
    }
    assert counters == Counter({"redacted_credit_card": 1, "redacted_email": 1})


def test_a_bare_aws_secret_under_a_key_like_name() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    out = redactor()({"aws_secret_access_key": secret, "AccessKey": secret, "other": secret})
    assert out["aws_secret_access_key"] == "[REDACTED:aws_secret_access_key]"
    assert out["AccessKey"] == "[REDACTED:aws_secret_access_key]"
    assert out["other"] == secret  # 40 characters alone, under an ordinary name: not enough


def test_overlapping_detectors_replace_once() -> None:
    # The URL's password is also a "password=" pair and an email-like string.
    out = text_of("see https://bob:password=x@mail.example.com/ now")
    assert "bob" not in out and "password=x" not in out and out.count("[REDACTED:") == 1


def test_private_key_over_plain_text_lines() -> None:
    r = redactor()
    lines = [
        "loaded key -----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
        "QyNTUxOQAAACDx3kBhR1c=",
        "-----END OPENSSH PRIVATE KEY----- done",
        "an ordinary line",
    ]
    out = [r({"message": line}, text_stream="f1")["message"] for line in lines]
    assert out == [
        "loaded key [REDACTED:private_key]",
        "[REDACTED:private_key]",
        "[REDACTED:private_key]",
        "[REDACTED:private_key] done",
        "an ordinary line",
    ]
    # Another file's lines are not inside that block.
    r({"message": "-----BEGIN PRIVATE KEY-----"}, text_stream="f2")
    assert r({"message": "QyNTUxOQAAACDx3kBhR1c="}, text_stream="f3")["message"] != MASK
    assert r({"message": "QyNTUxOQAAACDx3kBhR1c="}, text_stream="f3")["message"].startswith("Qy")


def test_a_key_block_never_closed_ends_at_the_first_line_that_is_not_base64() -> None:
    r = redactor()
    r({"message": "-----BEGIN RSA PRIVATE KEY-----"}, text_stream="f")
    assert r({"message": "MIIEpAIBAAKCAQEA"}, text_stream="f")["message"] == (
        "[REDACTED:private_key]"
    )
    line = "2026-11-25 12:00:00 INFO next request."  # its last word is not base64
    assert r({"message": line}, text_stream="f")["message"] == line
    assert r({"message": "MIIEpAIBAAKCAQEA"}, text_stream="f")["message"] == "MIIEpAIBAAKCAQEA"


def test_custom_detector_with_a_secret_group() -> None:
    import re

    from shipper.transform.redact.detectors import Detector

    r = Redactor(
        keys={},
        detectors=[],
        custom=[
            (Detector("employee", re.compile(r"EMP-\d{6}")), "mask"),
            (Detector("pin", re.compile(r"pin (?P<secret>\d{4})")), "mask"),
        ],
        counters=Counter(),
    )
    assert r({"m": "by EMP-123456 pin 1234"}) == {"m": "by [REDACTED:employee] pin [REDACTED:pin]"}


def test_luhn_and_card_prefixes() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert card_number_ok("378282246310005")  # Amex, 15 digits
    assert not card_number_ok("3782822463100050")  # Amex prefix, wrong length
    assert not card_number_ok("1234567812345670")  # passes Luhn, no issuer starts with 1


def test_decimal_tracing_ids_are_not_cards() -> None:
    # 4111111111111111 passes Luhn; as a tracing id it is a random number, not a card.
    record = {"dd": {"trace_id": "4111111111111111", "span_id": 4111111111111111}}
    assert redactor()(record) == {
        "dd": {"trace_id": "4111111111111111", "span_id": 4111111111111111}
    }
    assert redactor()({"order_ref": "4111111111111111"}) == {"order_ref": "[REDACTED:credit_card]"}


def test_a_line_mentioning_a_private_key_opens_no_block() -> None:
    r = redactor()
    r({"message": "loading PRIVATE KEY from vault"}, text_stream="f")
    assert r({"message": "MIIEpAIBAAKCAQEA"}, text_stream="f")["message"] == "MIIEpAIBAAKCAQEA"


def test_escaped_json_inside_a_string() -> None:
    text = 'body={\\"user\\":\\"ana\\",\\"password\\":\\"hunter2-x9\\"}'
    assert text_of(text) == text.replace("hunter2-x9", "[REDACTED]")


def test_keys_naming_a_secret_in_other_words_match_string_values() -> None:
    out = redactor()(
        {
            "SECRET_KEY": "django-insecure-x",
            "password_confirmation": "hunter2",
            "api_key_value": "k",
            "newPasswordHash": "h",
            "password_hash": "h",
            "token_key": 5,
            # Describing a secret, not holding it: the users' guide logs "token_prefix".
            "token_prefix": "sk-a...",
            "token_type": "Bearer",
            "session_id": "sess178763",
            "tokenizer": "cl100k",
        }
    )
    assert out == {
        "SECRET_KEY": MASK,
        "password_confirmation": MASK,
        "api_key_value": MASK,
        "newPasswordHash": "h",
        "password_hash": MASK,
        "token_key": 5,
        "token_prefix": "sk-a...",
        "token_type": "Bearer",
        "session_id": "sess178763",
        "tokenizer": "cl100k",
    }


def test_a_card_written_as_a_float_is_caught() -> None:
    assert redactor()({"pan": 4111111111111111.0, "n": 12.5}) == {
        "pan": "[REDACTED:credit_card]",
        "n": 12.5,
    }
