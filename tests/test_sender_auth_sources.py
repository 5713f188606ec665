"""The verdicts each provider gives, read as DMARC would: only a result for a domain aligned with
the From domain (or DMARC's own pass) vouches for the sender."""

from __future__ import annotations

import pytest

from relay.sender_auth import (
    FAIL,
    NONE,
    PASS,
    SenderAuth,
    from_authentication_results,
    from_mailersend,
    from_mandrill,
    from_ses,
    from_trusted_headers,
    from_trusted_received_spf,
    judge,
    strongest,
    unattributed_dkim,
)

FROM = "maria@acme-living.com"
TRUSTED = ["mx.acme-living.com"]
OWN = ("DKIM-Signature", "v=1; a=rsa-sha256; d=acme-living.com; s=k1; b=x")
STRANGER = ("DKIM-Signature", "v=1; a=rsa-sha256; d=evil.example; s=k1; b=x")
OLD_STYLE = ("DomainKey-Signature", "a=rsa-sha1; q=dns; d=evil.example; b=x")
FROM_HEADER = ("From", f"Maria <{FROM}>")


def test_a_dmarc_pass_for_another_domain_vouches_for_nothing() -> None:
    assert judge(FROM, [("dmarc", "pass", "")]).status == PASS  # a provider's DMARC is for the From domain
    assert judge(FROM, [("dmarc", "pass", "evil.example")]).status == FAIL
    forged = [("Authentication-Results", "mx.acme-living.com; dmarc=pass header.from=evil.example")]
    assert from_authentication_results(forged, FROM, TRUSTED).status == FAIL


@pytest.mark.parametrize(
    ("headers", "complete", "domain"),
    [
        ([OWN], True, "acme-living.com"),
        ([OWN, ("DKIM-Signature", "v=1; d=mail.acme-living.com; s=k2")], True, "acme-living.com"),
        ([OWN, STRANGER], True, ""),  # the verdict may be the stranger's
        ([OWN, OLD_STYLE], True, ""),
        ([STRANGER], True, ""),
        ([], True, ""),
        ([OWN], False, ""),  # part of the header block was not read: a stranger's may be in it
    ],
)
def test_a_verdict_naming_no_domain_counts_only_when_every_signature_is_aligned(
    headers: list[tuple[str, str]], complete: bool, domain: str
) -> None:
    assert unattributed_dkim(PASS, headers, FROM, complete) == ("dkim", PASS, domain)


@pytest.mark.parametrize(
    ("spf", "dkim", "dmarc", "envelope", "headers", "expected"),
    [
        ("FAIL", "FAIL", "PASS", "x@evil.example", [FROM_HEADER], PASS),
        ("FAIL", "FAIL", "PASS", "x@evil.example", [FROM_HEADER, ("From", "x@evil.example")], FAIL),
        ("PASS", "GRAY", "GRAY", "bounce@acme-living.com", [FROM_HEADER], PASS),
        ("PASS", "GRAY", "GRAY", "x@evil.example", [FROM_HEADER], FAIL),
        ("GRAY", "PASS", "GRAY", "x@evil.example", [FROM_HEADER], FAIL),  # no signature to name a domain
        ("GRAY", "PASS", "GRAY", "x@evil.example", [FROM_HEADER, OWN], PASS),
        ("GRAY", "PASS", "PROCESSING_FAILED", "x@evil.example", [FROM_HEADER, OWN, STRANGER], FAIL),
        ("GRAY", "GRAY", "GRAY", "x@evil.example", [FROM_HEADER], NONE),
        (None, None, None, None, [FROM_HEADER], NONE),
    ],
)
def test_ses_receipt_verdicts(
    spf: str | None, dkim: str | None, dmarc: str | None, envelope: str | None,
    headers: list[tuple[str, str]], expected: str,
) -> None:  # fmt: skip
    assert from_ses(spf, dkim, dmarc, envelope, FROM, headers).status == expected


def test_mandrill_names_no_domain_for_spf_or_dkim() -> None:
    assert from_mandrill("pass", True, True, FROM, [OWN]).status == PASS
    assert from_mandrill("pass", False, False, FROM, [OWN]).status == FAIL  # SPF for an envelope it does not name
    assert from_mandrill("pass", True, True, FROM, [OWN, STRANGER]).status == FAIL
    assert from_mandrill(None, True, False, FROM, [OWN]).detail.startswith("dkim=fail")
    assert from_mandrill(None, "true", "true", FROM, [OWN]).status == NONE  # booleans, not words
    assert from_mandrill(None, None, None, FROM, [OWN]).status == NONE


@pytest.mark.parametrize(
    ("code", "envelope", "expected"),
    [("+", "bounce@acme-living.com", PASS), ("+", "x@evil.example", FAIL), ("-", "bounce@acme-living.com", FAIL),
     ("~", "bounce@acme-living.com", FAIL), ("?", "bounce@acme-living.com", FAIL), (None, "b@acme-living.com", NONE),
     ("pass", "bounce@acme-living.com", NONE)],
)  # fmt: skip
def test_mailersend_spf_code_is_a_qualifier_for_the_envelope_sender(
    code: str | None, envelope: str, expected: str
) -> None:
    assert from_mailersend(code, False, envelope, FROM, []).status == expected


def test_mailersend_dkim_check_false_is_no_verdict_and_true_a_pass_naming_no_domain() -> None:
    assert from_mailersend(None, False, None, FROM, [OWN]).status == NONE
    assert from_mailersend(None, True, None, FROM, [OWN]).status == PASS
    assert from_mailersend(None, True, None, FROM, [STRANGER]).status == FAIL


SPF_PASS = "Pass (mx.acme-living.com: domain of b@acme-living.com designates 192.0.2.1 as permitted sender) "


def test_received_spf_counts_only_from_a_trusted_receiver_and_only_the_topmost() -> None:
    trusted = ("Received-SPF", SPF_PASS + "receiver=mx.acme-living.com; envelope-from=b@acme-living.com")
    written_by_sender = ("Received-SPF", SPF_PASS + "receiver=elsewhere.example; envelope-from=b@acme-living.com")
    assert from_trusted_received_spf([trusted], None, FROM, TRUSTED).status == PASS
    assert from_trusted_received_spf([written_by_sender], None, FROM, TRUSTED).status == NONE
    assert from_trusted_received_spf([written_by_sender, trusted], None, FROM, TRUSTED).status == NONE
    assert from_trusted_received_spf([trusted], None, FROM, []).status == NONE
    assert from_trusted_received_spf([], None, FROM, TRUSTED).status == NONE


def test_trusted_headers_prefer_authentication_results() -> None:
    results = ("Authentication-Results", "mx.acme-living.com; dkim=fail header.d=acme-living.com")
    spf = ("Received-SPF", SPF_PASS + "receiver=mx.acme-living.com; envelope-from=b@acme-living.com")
    assert from_trusted_headers([results, spf], None, FROM, TRUSTED).status == FAIL
    assert from_trusted_headers([spf], None, FROM, TRUSTED).status == PASS


def test_the_strongest_of_several_trusted_verdicts() -> None:
    passed, failed, none = SenderAuth(PASS, "dkim=pass a.com"), SenderAuth(FAIL, "spf=fail"), SenderAuth(NONE)
    assert strongest(failed, passed) == passed
    assert strongest(none, failed) == failed
    assert strongest(none, none).status == NONE
