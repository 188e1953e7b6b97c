"""The training-cycle report: an HTML + plain-text email, sent by SMTP or written to an outbox."""

from ml_assets.reporting.mailer import MailDeliveryError, Mailer, SmtpSettings
from ml_assets.reporting.report import CycleReport, build_message, markdown_to_html

__all__ = [
    "CycleReport",
    "MailDeliveryError",
    "Mailer",
    "SmtpSettings",
    "build_message",
    "markdown_to_html",
]
