"""query_params: the HTTP API's query parsing, fast path for plain queries, parse_qsl otherwise."""

from urllib.parse import parse_qsl

import pytest

from relay.http_api import query_params
from relay.signing import sign_request, verify_request_signature, verify_request_signature_any


@pytest.mark.parametrize(
    "raw",
    [
        "auth_key=k&auth_timestamp=1&auth_version=1.0&body_md5=abc&auth_signature=def",
        "",
        "a=&b",
        "a=1&&b=2",
        "filter_by_prefix=presence-&info=user_count",
        "a=x%26y&b=c+d",
        "a=%2B",
    ],
)
def test_same_pairs_as_parse_qsl(raw: str) -> None:
    assert query_params(raw) == parse_qsl(raw, keep_blank_values=True)


def test_encoded_separator_stays_in_the_value() -> None:
    assert query_params("filter_by_prefix=a%26b=c") == [("filter_by_prefix", "a&b=c")]


def test_any_path_matches_the_single_path_check() -> None:
    params = [("auth_key", "k"), ("auth_timestamp", "1"), ("auth_version", "1.0")]
    signature = sign_request("secret", "POST", "/apps/1/events", params)
    assert verify_request_signature("secret", "POST", "/apps/1/events", params, signature)
    assert verify_request_signature_any("secret", "post", ["/x", "/apps/1/events"], params, signature)
    assert not verify_request_signature_any("secret", "POST", ["/x"], params, signature)
    assert not verify_request_signature_any("other", "POST", ["/apps/1/events"], params, signature)
