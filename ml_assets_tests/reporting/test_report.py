"""The cycle report email, delivered to a real SMTP server (aiosmtpd) on loopback."""

import datetime as dt
import email
import email.policy
import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ml_assets.ml.evaluation import evaluate, plot_evaluation, slice_table_markdown
from ml_assets.reporting import (
    CycleReport,
    MailDeliveryError,
    Mailer,
    SmtpSettings,
    build_message,
    markdown_to_html,
)
from ml_assets.reporting.report import subject
from ml_assets_tests.fixtures.smtp import free_port

SENDER = "ml-assets@example.org"
RECIPIENTS = ["alice@example.org", "bob@example.org"]
USER, PASSWORD = "reporter", "s3cret-pass"


# --- SMTP server fixture ------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    def message(self):
        return email.message_from_bytes(self.content, policy=email.policy.default)


@dataclass
class StoringHandler:
    reject: set[str] = field(default_factory=set)
    envelopes: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 Message accepted for delivery"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: let aiosmtpd reply 535 itself (handled=True would mean we replied).
    return AuthResult(success=ok, handled=False)


@dataclass
class Server:
    handler: StoringHandler
    port: int
    outbox: Path

    def settings(self, **kwargs) -> SmtpSettings:
        kwargs.setdefault("starttls", False)
        return SmtpSettings(host="127.0.0.1", port=self.port, timeout=10, **kwargs)

    def mailer(self, **kwargs) -> Mailer:
        return Mailer(self.settings(**kwargs), self.outbox)


@pytest.fixture
def smtp_server(tmp_path):
    """Factory: start an aiosmtpd server on a free loopback port with the given options."""
    controllers = []

    def start(**smtp_kwargs) -> Server:
        handler = StoringHandler()
        port = free_port()
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, ready_timeout=10, **smtp_kwargs
        )
        controller.start()
        controllers.append(controller)
        return Server(handler, port, tmp_path / "outbox")

    yield start
    for controller in controllers:
        controller.stop()


# --- reports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation_artifacts():
    rng = np.random.default_rng(7)
    n = 2000
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)
    p_new = 1 / (1 + np.exp(-2 * x))
    p_old = np.clip(p_new + rng.normal(0, 0.2, n), 0, 1)
    slices = pd.DataFrame({"carrier": rng.choice(["AA", "UA", "DL"], size=n)})
    cand = evaluate("candidate", y, p_new, slices)
    champ = evaluate("champion", y, p_old, slices)
    return {
        "candidate": cand,
        "champion": champ,
        "slice_table": slice_table_markdown(
            [cand, champ], "carrier", metrics=("roc_auc", "log_loss")
        ),
        "png": plot_evaluation([cand, champ]),
    }


VERDICT_ROWS = [
    {
        "rule": "beats champion",
        "metric": "roc_auc",
        "slice": None,
        "candidate": 0.8123,
        "champion": 0.8011,
        "delta": 0.0112,
        "low": 0.004,
        "high": 0.0184,
        "threshold": -0.005,
        "criterion": "lower end > -0.0050 (non_inferiority, 95% interval)",
        "n": 6021,
        "positives": 1234,
        "passed": True,
    },
    {
        "rule": "slice regression",
        "metric": "log_loss",
        "slice": "carrier=AA",
        "candidate": 0.4401,
        "champion": 0.4523,
        "delta": -0.0122,
        "low": -0.03,
        "high": 0.006,
        "threshold": "<= +0.01 vs champion",
        "n": 640,
        "positives": 97,
        "p_value": 0.8,
        "passed": True,
    },
    {
        "metric": "ece",
        "slice": None,
        "candidate": 0.0311,
        "champion": 0.0250,
        "delta": 0.0061,
        "threshold": "<= 0.05",
        "passed": True,
    },
]


def deployed_report(artifacts) -> CycleReport:
    return CycleReport(
        dataset="flights",
        cycle_id="2013-03-01T00:00:00Z-abc123",
        status="deployed",
        failed_stage=None,
        error=None,
        verdict_rows=VERDICT_ROWS,
        verdict_passed=True,
        candidate={
            "name": "flights-gbm",
            "version": 3,
            "flavor": "sklearn",
            "metrics": {"roc_auc": 0.8123, "log_loss": 0.4401, "ece": 0.0311},
        },
        champion={
            "name": "flights-gbm",
            "version": 2,
            "flavor": "sklearn",
            "metrics": {"roc_auc": 0.8011, "log_loss": 0.4523, "ece": 0.0250},
        },
        deployed_version=3,
        reason="candidate passed every threshold of the gate",
        forced_reason=None,
        slice_tables_markdown={"carrier": artifacts["slice_table"]},
        plots={"ROC and reliability": artifacts["png"]},
        extra_sections={"Drift": "No drift detected.\n\n- psi(dep_delay): 0.02"},
    )


def failed_report() -> CycleReport:
    return CycleReport(
        dataset="flights",
        cycle_id="2013-03-02T00:00:00Z-def456",
        status="failed",
        failed_stage="train",
        error="ValueError: Input contains NaN <in column 'dep_delay'>\n  at fit()",
        champion={"name": "flights-gbm", "version": 2, "flavor": "sklearn", "metrics": {}},
        reason="training raised; the champion keeps serving",
    )


def _text_and_html(message):
    return (
        message.get_body(preferencelist=("plain",)).get_content(),
        message.get_body(preferencelist=("html",)).get_content(),
    )


# --- tests --------------------------------------------------------------------------------


def test_subjects():
    base = {"dataset": "flights", "cycle_id": "c1"}
    assert subject(CycleReport(**base, status="deployed", deployed_version=3)) == (
        "[ml_assets] flights: deployed version 3"
    )
    assert subject(
        CycleReport(**base, status="deployed", deployed_version=4, forced_reason="hotfix")
    ) == ("[ml_assets] flights: deployed version 4 (forced)")
    kept = CycleReport(
        **base, status="kept_champion", verdict_passed=False, champion={"name": "m", "version": 2}
    )
    assert subject(kept) == "[ml_assets] flights: kept champion v2 (gate failed)"
    first = CycleReport(**base, status="kept_champion", verdict_passed=False)
    assert subject(first) == "[ml_assets] flights: no model deployed (gate failed)"
    failed = CycleReport(**base, status="failed", failed_stage="evaluate")
    assert subject(failed) == "[ml_assets] flights: training cycle FAILED at evaluate"
    with pytest.raises(ValueError, match="status"):
        CycleReport(**base, status="exploded")


def test_deployed_report_over_smtp(smtp_server, evaluation_artifacts):
    server = smtp_server()
    report = deployed_report(evaluation_artifacts)
    where = server.mailer().send(build_message(report, SENDER, RECIPIENTS))
    assert where == f"smtp://127.0.0.1:{server.port}"
    assert not server.outbox.exists()

    (received,) = server.handler.envelopes
    assert received.mail_from == SENDER
    assert received.rcpt_tos == RECIPIENTS
    message = received.message()
    assert message["Subject"] == "[ml_assets] flights: deployed version 3"
    assert message["To"] == ", ".join(RECIPIENTS)
    assert message["X-ML-Assets-Cycle"] == report.cycle_id
    assert message.get_content_type() == "multipart/alternative"
    plain_part, related = message.get_payload()
    assert plain_part.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"

    text, html = _text_and_html(message)
    # Verdict table, in both parts.
    # Verdict table (issue 12): estimate, interval and rule per check; count, positives, adjusted p per slice.
    assert ("| beats champion | roc_auc | overall | 6021 (1234) | 0.8123 | 0.8011 | +0.0112 | [+0.0040, +0.0184] "
            "| lower end > -0.0050 (non_inferiority, 95% interval) | n/a | PASS |") in text
    assert ("| slice regression | log_loss | carrier=AA | 640 (97) | 0.4401 | 0.4523 | -0.0122 | [-0.0300, +0.0060] "
            "| <= +0.01 vs champion | 0.8000 | PASS |") in text
    for value in (
        "0.8123",
        "0.8011",
        "+0.0112",
        "[+0.0040, +0.0184]",
        "640 (97)",
        "0.8000",
        "carrier=AA",
        "0.4401",
        "-0.0122",
        "&lt;= +0.01 vs champion",
    ):
        assert re.search(rf"<td[^>]*>{re.escape(value)}</td>", html), value
    assert re.search(r"<td[^>]*background:#d9f2d9[^>]*>PASS</td>", html)
    assert "<th" in html and ">threshold</th>" in html
    # Champion vs challenger, deployed version, slices, extra section.
    assert "Deployed version: **3**" in text and "Deployed version: <b>3</b>" in html
    assert "candidate flights-gbm v3 (sklearn)" in text
    assert "champion flights-gbm v2 (sklearn)" in html
    assert "candidate passed every threshold" in text and "candidate passed every threshold" in html
    aa = evaluation_artifacts["candidate"].slices["carrier"]["AA"]
    assert "## Metrics by carrier" in text and f"{aa.roc_auc:.4f}" in text
    assert f"{aa.roc_auc:.4f}</td>" in html
    assert "psi(dep_delay): 0.02" in text and "<li>psi(dep_delay): 0.02</li>" in html
    assert "FORCED" not in text

    # The plot is an inline PNG referenced from the HTML by Content-ID.
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 1
    image = images[0]
    assert image.get_content() == evaluation_artifacts["png"]
    assert image.get_content().startswith(b"\x89PNG")
    assert image.get_content_disposition() == "inline"
    cid = image["Content-ID"].strip().strip("<>")
    assert f'src="cid:{cid}"' in html
    assert related.get_payload()[0].get_content_type() == "text/html"


def test_failed_report_over_smtp(smtp_server):
    server = smtp_server()
    server.mailer().send(build_message(failed_report(), SENDER, ["ops@example.org"]))
    (received,) = server.handler.envelopes
    assert received.rcpt_tos == ["ops@example.org"]
    message = received.message()
    assert message["Subject"] == "[ml_assets] flights: training cycle FAILED at train"
    text, html = _text_and_html(message)
    assert "Stage: **train**" in text and "Stage: <b>train</b>" in html
    assert "ValueError: Input contains NaN <in column 'dep_delay'>" in text
    assert "ValueError: Input contains NaN &lt;in column 'dep_delay'&gt;" in html
    assert "<pre" in html
    assert "Deployed version: none" in text
    assert "training raised; the champion keeps serving" in html
    assert "Gate verdict" not in text  # no verdict was reached
    assert not [p for p in message.walk() if p.get_content_maintype() == "image"]


def test_forced_promotion_is_reported(evaluation_artifacts):
    report = deployed_report(evaluation_artifacts)
    report.verdict_passed = False
    report.verdict_rows = [{**VERDICT_ROWS[0], "passed": False}]
    report.forced_reason = "incident INC-42: champion predicts constant 0"
    message = build_message(report, SENDER, RECIPIENTS)
    text, html = _text_and_html(message)
    assert message["Subject"] == "[ml_assets] flights: deployed version 3 (forced)"
    assert "FORCED PROMOTION" in text and "incident INC-42" in text
    assert "<b>FORCED PROMOTION</b>" in html and "incident INC-42" in html
    assert "Gate verdict: **FAILED**" in text
    assert re.search(r"<td[^>]*background:#f8d0d0[^>]*>FAIL</td>", html)


def test_smtp_login(smtp_server):
    server = smtp_server(authenticator=_authenticator, auth_require_tls=False)
    mailer = server.mailer(user=USER, password=PASSWORD)
    mailer.send(build_message(failed_report(), SENDER, RECIPIENTS))
    assert len(server.handler.envelopes) == 1


def test_smtp_wrong_password_raises_clear_error(smtp_server):
    server = smtp_server(authenticator=_authenticator, auth_require_tls=False)
    settings = server.settings(user=USER, password="wrong")
    assert "wrong" not in repr(settings)
    with pytest.raises(MailDeliveryError) as caught:
        Mailer(settings, server.outbox).send(build_message(failed_report(), SENDER, RECIPIENTS))
    text = str(caught.value)
    assert f"127.0.0.1:{server.port}" in text
    assert "login as 'reporter'" in text and "535" in text
    assert "wrong" not in text
    assert server.handler.envelopes == []


def test_smtp_refused_recipient_and_unreachable_server(smtp_server):
    server = smtp_server()
    server.handler.reject = {"nobody@example.org"}
    with pytest.raises(
        MailDeliveryError, match=r"refused every recipient: nobody@example.org: 550"
    ):
        server.mailer().send(build_message(failed_report(), SENDER, ["nobody@example.org"]))
    closed = free_port()
    with pytest.raises(MailDeliveryError, match=rf"127\.0\.0\.1:{closed} failed at connect"):
        Mailer(SmtpSettings("127.0.0.1", closed, starttls=False, timeout=5), server.outbox).send(
            build_message(failed_report(), SENDER, RECIPIENTS)
        )


def test_starttls_required_but_not_offered(smtp_server):
    server = smtp_server()
    with pytest.raises(MailDeliveryError, match=r"STARTTLS.*not supported"):
        server.mailer(starttls=True).send(build_message(failed_report(), SENDER, RECIPIENTS))


def _self_signed(tmp_path):
    x509 = pytest.importorskip("cryptography.x509", reason="cryptography is not installed")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_with_login(smtp_server, tmp_path):
    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    # AUTH only after STARTTLS (aiosmtpd's default auth_require_tls=True).
    server = smtp_server(tls_context=context, require_starttls=True, authenticator=_authenticator)
    settings = server.settings(starttls=True, user=USER, password=PASSWORD, cafile=str(cert_path))
    Mailer(settings, server.outbox).send(build_message(failed_report(), SENDER, RECIPIENTS))
    assert len(server.handler.envelopes) == 1
    # Without trusting the self-signed certificate, the handshake fails and says so.
    untrusted = server.settings(starttls=True, user=USER, password=PASSWORD)
    with pytest.raises(MailDeliveryError, match=r"failed at STARTTLS.*CERTIFICATE_VERIFY_FAILED"):
        Mailer(untrusted, server.outbox).send(build_message(failed_report(), SENDER, RECIPIENTS))
    assert len(server.handler.envelopes) == 1


def test_outbox_fallback_writes_parseable_eml(tmp_path, evaluation_artifacts):
    outbox = tmp_path / "outbox"
    mailer = Mailer(None, outbox)
    message = build_message(deployed_report(evaluation_artifacts), SENDER, RECIPIENTS)
    first = mailer.send(message)
    second = mailer.send(message)
    assert first != second
    files = sorted(outbox.iterdir())
    assert [str(f) for f in files] == sorted([first, second])  # no temp files left behind
    assert re.fullmatch(
        r"\d{8}T\d{6}\.\d{6}Z-ml-assets-flights-deployed-version-3(-2)?\.eml", files[0].name
    )
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "[ml_assets] flights: deployed version 3"
    text, html = _text_and_html(parsed)
    assert "| roc_auc | overall | 6021 (1234) | 0.8123 |" in text
    (image,) = [p for p in parsed.walk() if p.get_content_type() == "image/png"]
    assert f"cid:{image['Content-ID'].strip().strip('<>')}" in html
    assert image.get_content() == evaluation_artifacts["png"]


def test_build_message_needs_recipients():
    with pytest.raises(ValueError, match="recipient"):
        build_message(failed_report(), SENDER, [])


def test_markdown_to_html():
    text = "\n".join(
        [
            "# Title <x>",
            "Some **bold** and `code`.",
            "",
            "| name | value |",
            "| --- | ---: |",
            "| a\\|b | 1.5 |",
            "| <script> | FAIL |",
            "",
            "- one",
            "- two",
            "```",
            "raw <tag> | not a table",
            "```",
        ]
    )
    out = markdown_to_html(text)
    assert "<h3>Title &lt;x&gt;</h3>" in out
    assert "<b>bold</b>" in out and "<code>code</code>" in out
    assert re.search(r"<th[^>]*text-align:left[^>]*>name</th>", out)
    assert re.search(r"<td[^>]*text-align:right[^>]*>1.5</td>", out)
    assert re.search(r"<td[^>]*>a\|b</td>", out)
    assert "&lt;script&gt;" in out and "<script>" not in out
    assert "<li>one</li>" in out and "<li>two</li>" in out
    assert "<pre" in out and "raw &lt;tag&gt; | not a table" in out
