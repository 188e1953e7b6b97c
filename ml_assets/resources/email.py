"""Where reports go: SMTP when a host is configured, else .eml files in an outbox folder."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ml_assets.reporting.mailer import Mailer, SmtpSettings


class EmailResource(dg.ConfigurableResource):
    """Sends the training-cycle reports."""

    smtp_host: str | None = Field(None, description="SMTP server; unset writes .eml files to outbox_dir")
    smtp_port: int = Field(587, description="SMTP port")
    smtp_starttls: bool = Field(True, description="Upgrade the connection with STARTTLS")
    smtp_user: str | None = Field(None, description="SMTP login")
    smtp_password: str | None = Field(None, description="SMTP password (pass it as an EnvVar)")
    sender: str = Field("ml-assets@localhost", description="From address")
    recipients: list[str] = Field(default_factory=lambda: ["ml-team@localhost"], description="To addresses")
    outbox_dir: str = Field(".data/outbox", description="Folder for .eml files when no SMTP host is set")

    def mailer(self) -> Mailer:
        smtp = None
        if self.smtp_host:
            smtp = SmtpSettings(host=self.smtp_host, port=self.smtp_port, starttls=self.smtp_starttls,
                                user=self.smtp_user, password=self.smtp_password)
        return Mailer(smtp, Path(self.outbox_dir))
