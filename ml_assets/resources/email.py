"""Where reports go: SMTP when a host is configured, else .eml files in an outbox folder."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ml_assets.reporting.mailer import Mailer, SmtpSettings
from ml_assets.resources.envvar import field_value


class EmailResource(dg.ConfigurableResource):
    """Sends the training-cycle reports."""

    smtp_host: str | None = Field(None, description="SMTP server; unset writes .eml files to outbox_dir (env SMTP_HOST)")
    smtp_port: int = Field(587, description="SMTP port (env SMTP_PORT)")
    smtp_starttls: bool = Field(True, description="Upgrade the connection with STARTTLS (env SMTP_STARTTLS)")
    smtp_user: str | None = Field(None, description="SMTP login (env SMTP_USER)")
    smtp_password: str | None = Field(
        None, repr=False, description="SMTP password, a secret: pass it as EnvVar('SMTP_PASSWORD')"
    )
    sender: str = Field("ml-assets@localhost", description="From address (env ML_ASSETS_EMAIL_FROM)")
    recipients: list[str] = Field(default_factory=lambda: ["ml-team@localhost"],
                                  description="To addresses (env ML_ASSETS_EMAIL_TO, comma-separated)")
    outbox_dir: str = Field(".data/outbox", description="Folder for .eml files when no SMTP host is set")

    def mailer(self) -> Mailer:
        smtp = None
        host = field_value(self.smtp_host)
        if host:
            smtp = SmtpSettings(host=host, port=self.smtp_port, starttls=self.smtp_starttls,
                                user=field_value(self.smtp_user), password=field_value(self.smtp_password))
        return Mailer(smtp, Path(self.outbox_dir))
