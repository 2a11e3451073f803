"""`[apps.jwt]` from TOML and `RELAY_APP_JWT_<FIELD>` from the environment, and the start-up refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, load_config
from relay.jwt.settings import JwtSettings
from tests.jwt.tokens import ec_pair, rsa_pair

APP_TOML = '[[apps]]\nid = "1001"\nkey = "k"\nsecret = "s"\n'


def load_toml(tmp_path: Path, text: str) -> JwtSettings | None:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return load_config(str(path), env={}).apps[0].jwt


def test_table_is_read_from_toml(tmp_path: Path) -> None:
    settings = load_toml(
        tmp_path,
        APP_TOML + '[apps.jwt]\nsecret = "x"\nissuer = "https://app"\naudience = "relay"\nleeway = 5\n'
        'algorithms = ["HS256", "HS512"]\nquery_parameter = "jwt"\n',
    )
    assert settings == JwtSettings(
        secret="x",
        issuer="https://app",
        audience="relay",
        leeway=5.0,
        algorithms=("HS256", "HS512"),
        query_parameter="jwt",
    )


def test_app_without_table_has_no_jwt(tmp_path: Path) -> None:
    assert load_toml(tmp_path, APP_TOML) is None


def test_environment_app_reads_relay_app_jwt_fields() -> None:
    env = {
        "RELAY_APP_ID": "1001",
        "RELAY_APP_KEY": "k",
        "RELAY_APP_SECRET": "s",
        "RELAY_APP_JWT_JWKS_URL": "https://app.example.com/.well-known/jwks.json",
        "RELAY_APP_JWT_ALGORITHMS": "RS256,ES256",
        "RELAY_APP_JWT_AUDIENCE": "relay",
        "RELAY_APP_JWT_LEEWAY": "3",
    }
    settings = load_config(env=env).apps[0].jwt
    assert settings == JwtSettings(
        jwks_url="https://app.example.com/.well-known/jwks.json",
        algorithms=("RS256", "ES256"),
        audience="relay",
        leeway=3.0,
    )


def test_pinned_algorithms_default_by_key_source() -> None:
    assert JwtSettings(secret="x").pinned_algorithms == ("HS256",)
    assert JwtSettings(jwks_url="https://x").pinned_algorithms == ("RS256",)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("", "apps[0].jwt.secret: set exactly one of secret, public_key or jwks_url"),
        ('secret = "x"\njwks_url = "https://x"', "set exactly one"),
        ('secret = "x"\nalgorithms = ["RS256"]', "algorithms: RS256 needs public_key or jwks_url, not secret"),
        ('jwks_url = "https://x"\nalgorithms = ["HS256"]', "algorithms: HS256 needs secret, not a public key"),
        ('secret = "x"\nalgorithms = ["none"]', "algorithms: 'none' is not accepted"),
        ('jwks_url = "ftp://x"', "jwks_url: must be an http:// or https:// URL"),
        ('public_key = "not a pem"', "public_key: not a PEM public key for RS256"),
        ('secret = "x"\nencryption_master_key_base64 = "c2hvcnQ="', "encryption_master_key_base64: must be 32 bytes"),
        ('secret = "x"\nquery_parameter = ""', "query_parameter: must not be empty"),
        ('secret = "x"\nsurprise = 1', "apps[0].jwt.surprise: unknown setting"),
    ],
)
def test_invalid_tables_fail_at_start_up(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_toml(tmp_path, APP_TOML + "[apps.jwt]\n" + table + "\n")


def test_public_key_must_fit_the_algorithm(tmp_path: Path) -> None:
    pem = ec_pair().public_pem.replace("\n", "\\n")
    with pytest.raises(ConfigError, match="public_key: not a PEM public key for RS256"):
        load_toml(tmp_path, APP_TOML + f'[apps.jwt]\npublic_key = "{pem}"\n')
    assert load_toml(tmp_path, APP_TOML + f'[apps.jwt]\npublic_key = "{pem}"\nalgorithms = ["ES256"]\n') is not None
    rsa_pem = rsa_pair().public_pem
    assert load_toml(tmp_path, APP_TOML + f"[apps.jwt]\npublic_key = '''{rsa_pem}'''\n") is not None
