"""Reading providers' SPF and DKIM verdicts, DMARC-style alignment with the From domain."""

from __future__ import annotations

import pytest

from relay.sender_auth import (
    FAIL,
    NONE,
    PASS,
    aligned,
    from_authentication_results,
    from_mailgun,
    from_received_spf,
    from_sendgrid,
    judge,
)

FROM = "maria@acme-living.com"


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("acme-living.com", True),
        ("mail.acme-living.com", True),
        ("ACME-LIVING.COM.", True),
        ("notacme-living.com", False),
        ("acme-living.com.evil.com", False),
        ("living.com", False),
        ("com", False),
        ("", False),
    ],
)
def test_alignment_is_the_same_domain_or_a_subdomain(domain: str, expected: bool) -> None:
    assert aligned(domain, "acme-living.com") is expected


def test_a_pass_for_another_domain_is_a_fail() -> None:
    assert judge(FROM, [("dkim", "pass", "evil.com"), ("spf", "pass", "evil.com")]).status == FAIL
    assert judge(FROM, [("dkim", "fail", "acme-living.com"), ("spf", "pass", "bounce.acme-living.com")]).status == PASS
    assert judge(FROM, []).status == NONE


def test_only_the_topmost_trusted_authentication_results_counts() -> None:
    top = "mx.acme-living.com; dkim=fail header.d=acme-living.com; spf=softfail smtp.mailfrom=x@evil.com"
    forged_below = [
        ("Authentication-Results", top),
        ("Authentication-Results", "mx.acme-living.com; dkim=pass header.d=acme-living.com"),
    ]
    assert from_authentication_results(forged_below, FROM, ["mx.acme-living.com"]).status == FAIL
    untrusted = [("Authentication-Results", "evil.example; dmarc=pass header.from=acme-living.com")]
    assert from_authentication_results(untrusted, FROM, ["mx.acme-living.com"]).status == NONE
    assert from_authentication_results(forged_below[1:], FROM, []).status == NONE
    dmarc = [("Authentication-Results", "mx.acme-living.com 1; dmarc=pass (p=reject) header.from=acme-living.com")]
    assert from_authentication_results(dmarc, FROM, ["mx.acme-living.com"]).status == PASS


def test_sendgrid_fields() -> None:
    assert from_sendgrid("pass", "{@acme-living.com : pass}", "bounce@sendgrid.net", FROM).status == PASS
    assert from_sendgrid("pass", "{@evil.com : pass}", "x@evil.com", FROM).status == FAIL
    assert from_sendgrid("pass", "none", "bounce@mail.acme-living.com", FROM).status == PASS
    assert from_sendgrid(None, None, None, FROM).status == NONE


def test_mailgun_headers() -> None:
    signed = [
        ("DKIM-Signature", "v=1; a=rsa-sha256; d=acme-living.com; s=k1; h=from"),
        ("X-Mailgun-Dkim-Check-Result", "Pass"),
        ("X-Mailgun-Spf", "Neutral"),
    ]
    assert from_mailgun(signed, "x@evil.com", FROM).status == PASS
    forged = [("DKIM-Signature", "v=1; d=evil.com; s=k1"), ("X-Mailgun-Dkim-Check-Result", "Pass"),
              ("X-Mailgun-Spf", "Pass")]  # fmt: skip
    assert from_mailgun(forged, "x@evil.com", FROM).status == FAIL
    assert from_mailgun([], None, FROM).status == NONE


def test_received_spf() -> None:
    value = "Pass (sender SPF authorized) identity=mailfrom; client-ip=1.2.3.4; envelope-from=a@acme-living.com;"
    assert from_received_spf(value, None, FROM).status == PASS
    assert from_received_spf("Fail (not authorized) envelope-from=a@acme-living.com", None, FROM).status == FAIL
    assert from_received_spf(None, None, FROM).status == NONE
