"""Is an email really from the domain its From names? Pure: reads the verdicts providers already give.

DMARC's rule, without DNS: the email passes when SPF passed for an envelope sender, or DKIM
passed for a signing domain, that is aligned with the From domain (the same domain, or one a
subdomain of the other). The relay checks no signature itself; it trusts the receiving
provider's verdict, or an `Authentication-Results` header from an `authserv-id` the operator
names (RELAY_TRUSTED_AUTHSERV_IDS), and only the topmost such header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PASS = "pass"
FAIL = "fail"
NONE = "none"  # no verdict to go by

ENFORCE = "enforce"
REPORT = "report"
OFF = "off"
MODES = (ENFORCE, REPORT, OFF)

NOT_AUTHENTICATED = "sender not authenticated"


@dataclass(frozen=True)
class SenderAuth:
    """The verdict on an email's From domain, with what it rests on."""

    status: str = NONE
    detail: str = ""
    #: The caller itself is trusted to say who sent it (the partner API, a provider's record of
    #: mail the account sent): its routing metadata is honoured whatever the direction.
    vouched: bool = False

    def describe(self) -> str:
        return f"{self.status}: {self.detail}" if self.detail else self.status


def vouched_by(source: str) -> SenderAuth:
    return SenderAuth(PASS, source, vouched=True)


# (method, result, domain) as a receiving server reports them.
Result = tuple[str, str, str]


def domain_of(address: str | None) -> str:
    return (address or "").strip().strip("<>").rpartition("@")[2].lower().strip(".")


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other."""
    d, f = domain.lower().strip("."), from_domain.lower().strip(".")
    if "." not in d or "." not in f:
        return False  # a bare top-level domain aligns with nothing
    return d == f or f.endswith("." + d) or d.endswith("." + f)


def judge(from_address: str | None, results: Iterable[Result]) -> SenderAuth:
    """PASS on the first aligned pass (or a DMARC pass); FAIL when there were results but none did."""
    from_domain = domain_of(from_address)
    seen = []
    for method, result, domain in results:
        method, result = method.lower(), result.lower()
        seen.append(f"{method}={result}" + (f" {domain}" if domain else ""))
        if result == PASS and (method == "dmarc" or aligned(domain, from_domain)):
            return SenderAuth(PASS, seen[-1])
    if not seen:
        return SenderAuth(NONE)
    return SenderAuth(FAIL, ", ".join(seen) + f" (From domain {from_domain or 'missing'})")


_METHOD = re.compile(r"^\s*(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(smtp\.mailfrom|header\.d|header\.i|header\.from|envelope-from)\s*=\s*([^\s;()]+)", re.I)


def parse_authentication_results(value: str, trusted_ids: Iterable[str]) -> list[Result] | None:
    """The results of one `Authentication-Results` header; None unless its authserv-id is trusted."""
    authserv, _, rest = value.partition(";")
    words = authserv.split()
    if not words or words[0].lower().strip() not in {t.lower() for t in trusted_ids}:
        return None
    results = []
    for clause in rest.split(";"):
        method = _METHOD.match(clause)
        if not method:
            continue
        properties = {name.lower(): found for name, found in _PROPERTY.findall(clause)}
        identity = next(
            (properties[k] for k in ("header.d", "header.from", "smtp.mailfrom", "header.i", "envelope-from")
             if k in properties),
            "",
        )  # fmt: skip
        results.append((method[1], method[2], domain_of(identity) if "@" in identity else identity.lower()))
    return results


def from_authentication_results(
    headers: Iterable[tuple[str, str]], from_address: str | None, trusted_ids: Iterable[str]
) -> SenderAuth:
    """The verdict of the topmost `Authentication-Results` from a trusted authserv-id, if any."""
    trusted = tuple(trusted_ids)
    if not trusted:
        return SenderAuth(NONE)
    for name, value in headers:
        if name.lower() == "authentication-results":
            results = parse_authentication_results(value, trusted)
            if results is not None:
                return judge(from_address, results)
    return SenderAuth(NONE)


def from_received_spf(value: str | None, envelope_from: str | None, from_address: str | None) -> SenderAuth:
    """`Received-SPF: Pass (…) … envelope-from=a@b.com; …` added by the receiving provider."""
    if not value or not value.split():
        return SenderAuth(NONE)
    result = value.split()[0].lower()
    named = re.search(r"envelope-from=\"?([^\s;\"]+)", value, re.IGNORECASE)
    return judge(from_address, [("spf", result, domain_of(named[1] if named else envelope_from))])


_SENDGRID_DKIM = re.compile(r"@?([a-z0-9.-]+\.[a-z]{2,})\s*:\s*([a-z]+)", re.IGNORECASE)


def from_sendgrid(spf: str | None, dkim: str | None, envelope_from: str | None, from_address: str | None) -> SenderAuth:
    """SendGrid Inbound Parse's `SPF` (`pass`) and `dkim` (`{@acme-living.com : pass}`) fields."""
    results: list[Result] = []
    if dkim:
        results += [("dkim", result, domain) for domain, result in _SENDGRID_DKIM.findall(dkim)]
    if spf and spf.strip():
        results.append(("spf", spf.strip().split()[0], domain_of(envelope_from)))
    return judge(from_address, results)


_DKIM_DOMAIN = re.compile(r"(?:^|;)\s*d\s*=\s*([^\s;]+)", re.IGNORECASE)


def from_mailgun(headers: Iterable[tuple[str, str]], envelope_from: str | None, from_address: str | None) -> SenderAuth:
    """Mailgun's `X-Mailgun-Spf` and `X-Mailgun-Dkim-Check-Result`; the DKIM result counts for the
    domains of the message's DKIM-Signature headers."""
    pairs = [(name.lower(), value) for name, value in headers]
    spf = next((v for n, v in pairs if n == "x-mailgun-spf"), None)
    dkim = next((v for n, v in pairs if n == "x-mailgun-dkim-check-result"), None)
    results: list[Result] = []
    if dkim and dkim.strip():
        signers = [m[1] for n, v in pairs if n == "dkim-signature" for m in [_DKIM_DOMAIN.search(v)] if m]
        results += [("dkim", dkim.strip().split()[0], signer) for signer in signers or [""]]
    if spf and spf.strip():
        results.append(("spf", spf.strip().split()[0], domain_of(envelope_from)))
    return judge(from_address, results)
