"""Redaction: what goes to the log loses the secrets a provider's error may quote."""

from __future__ import annotations

from chatcore_adapters.llm.redaction import redact


def test_redact_removes_given_secrets_and_key_shapes() -> None:
    raw = (
        "bad key sk-proj-abcdef123456 for Authorization: Bearer abc.def-ghi_jkl "
        'api_key="hunter2-hunter2" and my-own-secret-value'
    )
    clean = redact(raw, ["my-own-secret-value"])
    for secret in ("sk-proj-abcdef123456", "abc.def-ghi_jkl", "hunter2-hunter2", "my-own-secret"):
        assert secret not in clean
    assert clean.startswith("bad key [REDACTED]")
