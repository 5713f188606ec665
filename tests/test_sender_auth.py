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


def signed_by(*domains: str) -> list[tuple[str, str]]:
    return [("DKIM-Signature", f"v=1; a=rsa-sha256; d={domain}; s=k1; b=x") for domain in domains]


def test_sendgrid_fields() -> None:
    signed = signed_by("acme-living.com")
    assert from_sendgrid("pass", "{@acme-living.com : pass}", "bounce@sendgrid.net", FROM, signed).status == PASS
    assert from_sendgrid("pass", "{@evil.com : pass}", "x@evil.com", FROM, signed_by("evil.com")).status == FAIL
    assert from_sendgrid("pass", "none", "bounce@mail.acme-living.com", FROM).status == PASS
    assert from_sendgrid(None, None, None, FROM).status == NONE
    # a verdict for a signature the message does not carry, or read from a header block cut short
    assert from_sendgrid("softfail", "{@acme-living.com : pass}", None, FROM).status == FAIL
    assert from_sendgrid("softfail", "{@acme-living.com : pass}", None, FROM, signed, complete=False).status == FAIL


@pytest.mark.parametrize(
    "d",
    [
        "acme-living.com:pass.evil.com",  # echoed as {@acme-living.com:pass.evil.com : fail}
        "acme-living.com : pass, @evil.com",  # echoed as two entries, the first a forged pass
    ],
)
def test_a_signing_domain_written_to_look_like_a_verdict_is_no_verdict(d: str) -> None:
    field = "{@" + d + " : fail}"
    verdict = from_sendgrid("softfail", field, "x@evil.com", FROM, signed_by(d))
    assert verdict.status == FAIL, verdict


def test_received_spf_reads_keys_only_where_a_pair_starts() -> None:
    helo = ("Pass (sender SPF authorized) identity=mailfrom; client-ip=1.2.3.4; "
            "helo=envelope-from=maria@acme-living.com; envelope-from=bounce@evil.example; receiver=mx")  # fmt: skip
    assert from_received_spf(helo, None, FROM).status == FAIL
    quoted = 'Pass identity=mailfrom; envelope-from="envelope-from=maria@acme-living.com x"@evil.example'
    assert from_received_spf(quoted, None, FROM).status == FAIL
    commented = "Pass (envelope-from=maria@acme-living.com) identity=mailfrom; envelope-from=x@evil.example"
    assert from_received_spf(commented, None, FROM).status == FAIL


def test_authentication_results_reads_each_methods_own_identity_outside_comments() -> None:
    trusted = ["mx.acme-living.com"]
    for value in [
        "mx.acme-living.com; spf=pass (header.d=acme-living.com) smtp.mailfrom=x@evil.com",
        "mx.acme-living.com; spf=pass smtp.mailfrom=x@evil.com smtp.helo=header.d=acme-living.com",
        "mx.acme-living.com; spf=pass header.d=acme-living.com smtp.mailfrom=x@evil.com",
        "mx.acme-living.com; dkim=pass (header.d=acme-living.com) header.d=evil.com",
    ]:
        verdict = from_authentication_results([("Authentication-Results", value)], FROM, trusted)
        assert verdict.status == FAIL, (value, verdict)
    spf = "mx.acme-living.com; spf=pass (mx: domain of x@acme-living.com) smtp.mailfrom=bounce@mail.acme-living.com"
    assert from_authentication_results([("Authentication-Results", spf)], FROM, trusted).status == PASS


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
