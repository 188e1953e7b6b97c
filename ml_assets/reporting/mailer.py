"""Deliver a report: SMTP when configured, otherwise an ``.eml`` file in an outbox directory."""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path

from ml_assets.fileio import atomic_write

log = logging.getLogger(__name__)


class MailDeliveryError(RuntimeError):
    """Sending over SMTP failed; the message names the server and, if any, its reply."""


@dataclass
class SmtpSettings:
    host: str
    port: int = 587
    starttls: bool = True
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30
    # CA bundle to verify the server's STARTTLS certificate with (a private CA or a
    # self-signed certificate); None uses the system trust store.
    cafile: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{exc.smtp_code} {text}".strip()


def _slug(text: str, limit: int = 80) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "message"


class Mailer:
    def __init__(self, smtp: SmtpSettings | None, outbox_dir: Path):
        self.smtp = smtp
        self.outbox_dir = Path(outbox_dir)

    def send(self, message: EmailMessage | Message) -> str:
        """Deliver ``message``; returns ``smtp://host:port`` or the path of the written file."""
        if self.smtp is None:
            return str(self._write_outbox(message))
        self._send_smtp(message, self.smtp)
        return f"smtp://{self.smtp.address}"

    def _send_smtp(self, message: Message, s: SmtpSettings) -> None:
        stage = "connect"
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as client:
                client.ehlo()
                if s.starttls:
                    stage = "STARTTLS"
                    context = ssl.create_default_context(cafile=s.cafile)
                    client.starttls(context=context)
                    client.ehlo()
                if s.user:
                    stage = f"login as {s.user!r}"
                    client.login(s.user, s.password or "")
                stage = "send"
                refused = client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            detail = "; ".join(
                f"{rcpt}: {code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text}"
                for rcpt, (code, text) in exc.recipients.items()
            )
            raise MailDeliveryError(f"SMTP {s.address} refused every recipient: {detail}") from exc
        except smtplib.SMTPResponseException as exc:  # auth, sender, data, starttls replies
            raise MailDeliveryError(
                f"SMTP {s.address} failed at {stage}: server replied {_reply(exc)}"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise MailDeliveryError(f"SMTP {s.address} failed at {stage}: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, timeouts, TLS errors
            raise MailDeliveryError(
                f"SMTP {s.address} failed at {stage}: {type(exc).__name__}: {exc}"
            ) from exc
        if refused:
            # Some recipients got the message; raising would invite a duplicate resend.
            log.warning("SMTP %s refused some recipients: %s", s.address, refused)

    def _write_outbox(self, message: Message) -> Path:
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        stem = f"{stamp}-{_slug(str(message.get('Subject', '')))}"
        target = self.outbox_dir / f"{stem}.eml"
        counter = 1
        while target.exists():
            counter += 1
            target = self.outbox_dir / f"{stem}-{counter}.eml"
        data = message.as_bytes()
        atomic_write(target, lambda handle: handle.write(data), suffix=".eml")
        return target
