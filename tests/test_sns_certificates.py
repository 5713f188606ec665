"""Amazon SES through SNS: which hosts a signing certificate or a subscription URL may come from,
when the certificate is fetched, and what a certificate URL that does not answer 200 means.

Nothing here reaches the internet: a local proxy (HTTPS_PROXY) stands where AWS would be and
records every host the relay tried to reach, and a local HTTPS server plays the certificate host.
"""

from __future__ import annotations

import json
import socketserver
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.serving import make_server

from relay.app import create_app
from relay.providers.ses import is_sns_host
from relay.queue import QUEUE_KEY
from tests.conftest import SnsSigner, self_signed_certificate
from tests.helpers import free_port, payload

SES = "/webhooks/ses"

LOOKALIKES = [
    "sns.s3.amazonaws.com",  # S3 buckets anyone can create
    "sns.s3-us-west-2.amazonaws.com",
    "sns.s3-accelerate.amazonaws.com",
    "sns.s3.us-east-1.amazonaws.com",
    "sns.amazonaws.com",
    "sns.us-east-1.amazonaws.com.evil.com",
    "sns-us-east-1.amazonaws.com",
    "xsns.us-east-1.amazonaws.com",
    "sns.us-east-1.amazonaws.com.cn",  # a region outside China under the China domain
    "sns.cn-north-1.amazonaws.com",  # and the other way round
    "sns.cn-south-1.amazonaws.com.cn",
    "sns.us-east.amazonaws.com",
    "sns.us-east-1a.amazonaws.com",
    "sns.xx-east-1.amazonaws.com",
    "sns.us-up-1.amazonaws.com",
    "sns.bucket.us-east-1.amazonaws.com",
    "s3.sns.us-east-1.amazonaws.com",
]
REAL = [
    "sns.us-east-1.amazonaws.com",
    "sns.eu-central-1.amazonaws.com",
    "sns.ap-southeast-2.amazonaws.com",
    "sns.us-gov-west-1.amazonaws.com",
    "sns.ca-central-1.amazonaws.com",
    "sns.me-south-1.amazonaws.com",
    "sns.af-south-1.amazonaws.com",
    "sns.il-central-1.amazonaws.com",
    "sns.mx-central-1.amazonaws.com",
    "sns.sa-east-1.amazonaws.com",
    "sns.eu-south-2.amazonaws.com",
    "sns.ap-northeast-3.amazonaws.com",
    "sns.cn-north-1.amazonaws.com.cn",
    "sns.cn-northwest-1.amazonaws.com.cn",
]


# A proxy standing where the internet would be -----------------------------------------------


@dataclass
class Proxy:
    """Answers every request 502 and records what was asked: `CONNECT host:443` for https."""

    url: str = ""
    seen: list[str] = field(default_factory=list)

    def hosts(self) -> list[str]:
        return [line.split()[1] for line in self.seen if line.startswith("CONNECT ")]


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    recorder = Proxy()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            recorder.seen.append(self.rfile.readline(4096).decode("latin-1").strip())
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, recorder.url)
    for name in ("NO_PROXY", "no_proxy"):  # the local stand-ins are reached directly
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    yield recorder
    server.shutdown()
    server.server_close()


# A certificate host that answers what the test says -----------------------------------------


@dataclass
class CertificateHost:
    """An HTTPS server on 127.0.0.1 serving its own certificate as the SNS signing certificate,
    with `status` (200 unless a test sets it) and a count of the requests it answered."""

    origin: str
    signer: SnsSigner
    status: list[int] = field(default_factory=lambda: [200])
    seen: list[str] = field(default_factory=list)

    def cert_url(self) -> str:
        """A URL of its own per call: the relay keeps certificates by URL."""
        return f"{self.origin}/SimpleNotificationService-{uuid.uuid4().hex}.pem"


@pytest.fixture(scope="module")
def certificate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertificateHost]:
    from flask import Flask, Response, request

    key, pem, cert_file, key_file = self_signed_certificate(tmp_path_factory.mktemp("sns-host"), "host")
    app = Flask("sns-certificate-host")
    host = CertificateHost("", SnsSigner("", str(cert_file), key, []))

    @app.get("/<path:name>")
    def certificate(name: str) -> Response:
        host.seen.append(request.path)
        status = host.status[0]
        return Response(pem if status == 200 else "no", status=status, mimetype="application/x-pem-file")

    server = make_server("127.0.0.1", free_port(), app, threaded=True, ssl_context=(str(cert_file), str(key_file)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host.origin = host.signer.origin = f"https://127.0.0.1:{server.server_port}"
    yield host
    server.shutdown()


@pytest.fixture
def cert_host(certificate_server: CertificateHost, monkeypatch: pytest.MonkeyPatch) -> CertificateHost:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate_server.signer.ca_file)
    certificate_server.status[:] = [200]
    certificate_server.seen.clear()
    return certificate_server


@pytest.fixture
def client(make_settings: Any, cert_host: CertificateHost) -> Any:
    return create_app(make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=cert_host.origin)).test_client()


def notification(host: CertificateHost, cert_url: str | None = None, **changes: Any) -> dict[str, Any]:
    message = {**json.loads(payload("ses/notification.json")), "Message": payload("ses/received-event.json").decode()}
    message.update(changes)
    return host.signer.sign(message, cert_url=cert_url or host.cert_url())


def confirmation(host: CertificateHost, subscribe_url: str) -> dict[str, Any]:
    message = {**json.loads(payload("ses/subscription-confirmation.json")), "SubscribeURL": subscribe_url}
    return host.signer.sign(message, version="2", cert_url=host.cert_url())


def post(client: Any, message: dict[str, Any], kind: str | None = None) -> Any:
    return client.post(SES, data=json.dumps(message), content_type="text/plain; charset=UTF-8",
                       headers={"x-amz-sns-message-type": message["Type"] if kind is None else kind})  # fmt: skip


# The host rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", LOOKALIKES)
def test_lookalike_hosts_are_not_sns(host: str) -> None:
    assert not is_sns_host(host)


@pytest.mark.parametrize("host", REAL)
def test_real_region_endpoints_are_sns(host: str) -> None:
    assert is_sns_host(host)


@pytest.mark.parametrize("host", LOOKALIKES)
def test_a_certificate_on_a_lookalike_host_is_401_and_never_fetched(
    client: Any, cert_host: CertificateHost, proxy: Proxy, redis_client: Any, host: str
) -> None:
    message = notification(cert_host, f"https://{host}/SimpleNotificationService-abc.pem")
    response = post(client, message)
    assert response.status_code == 401, response.json
    assert proxy.seen == [] and cert_host.seen == []
    assert redis_client.llen(QUEUE_KEY) == 0


@pytest.mark.parametrize("host", REAL)
def test_a_certificate_on_a_real_sns_host_is_fetched(
    client: Any, cert_host: CertificateHost, proxy: Proxy, host: str
) -> None:
    """The relay goes for it (here the proxy answers 502: no answer, so 503 and SNS retries)."""
    response = post(client, notification(cert_host, f"https://{host}/SimpleNotificationService-abc.pem"))
    assert response.status_code == 503, response.json
    assert proxy.hosts() == [f"{host}:443"]


@pytest.mark.parametrize("host", LOOKALIKES)
def test_a_subscribe_url_on_a_lookalike_host_is_never_fetched(
    client: Any, cert_host: CertificateHost, proxy: Proxy, host: str
) -> None:
    response = post(client, confirmation(cert_host, f"https://{host}/?Action=ConfirmSubscription&Token=2336"))
    # Validly signed, but the URL fails the same host rule as certificates: a failed check, 401.
    assert response.status_code == 401 and "SubscribeURL" in response.json["error"]
    assert proxy.seen == []


@pytest.mark.parametrize("host", ["sns.us-east-1.amazonaws.com", "sns.cn-northwest-1.amazonaws.com.cn"])
def test_a_subscribe_url_on_a_real_sns_host_is_fetched(
    client: Any, cert_host: CertificateHost, proxy: Proxy, host: str
) -> None:
    response = post(client, confirmation(cert_host, f"https://{host}/?Action=ConfirmSubscription&Token=2336"))
    assert response.status_code == 503, response.json
    assert proxy.hosts() == [f"{host}:443"]


# When the certificate is fetched ------------------------------------------------------------


def test_the_certificate_is_fetched_only_after_the_cheap_checks(
    client: Any, cert_host: CertificateHost, redis_client: Any
) -> None:
    refused = [
        (notification(cert_host, TopicArn="arn:aws:sns:us-east-1:999999999999:someone-else"), None),
        (notification(cert_host), "SubscriptionConfirmation"),  # the type header disagrees
        (notification(cert_host), ""),
        ({**notification(cert_host), "Type": "Surprise"}, "Surprise"),
        ({**notification(cert_host), "SignatureVersion": "3"}, None),
        ({**notification(cert_host), "Signature": "not base64!"}, None),
    ]
    for message, kind in refused:
        assert post(client, message, kind).status_code == 401, (message, kind)
    assert cert_host.seen == [] and redis_client.llen(QUEUE_KEY) == 0
    assert post(client, notification(cert_host)).status_code == 200
    assert len(cert_host.seen) == 1  # the server is there: it was just never asked before


@pytest.mark.parametrize("status", [404, 403, 401, 410])
def test_a_certificate_url_that_refuses_is_401(
    client: Any, cert_host: CertificateHost, redis_client: Any, status: int
) -> None:
    cert_host.status[:] = [status]
    response = post(client, notification(cert_host))
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("SNS-Signature")
    assert len(cert_host.seen) == 1 and redis_client.llen(QUEUE_KEY) == 0


def test_a_certificate_host_in_trouble_is_503_so_sns_retries(client: Any, cert_host: CertificateHost) -> None:
    cert_host.status[:] = [500]
    response = post(client, notification(cert_host))
    assert response.status_code == 503 and response.headers["Retry-After"]
    cert_host.status[:] = [200]
    assert post(client, notification(cert_host)).status_code == 200


def test_a_certificate_host_that_does_not_answer_is_503(make_settings: Any, cert_host: CertificateHost) -> None:
    closed = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    client = create_app(make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=closed)).test_client()
    response = post(client, notification(cert_host, f"{closed}/SimpleNotificationService-x.pem"))
    assert response.status_code == 503, response.json
