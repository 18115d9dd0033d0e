"""Email over SMTP with the standard library's ``smtplib``."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from shared.notifications import DeliveryError


class SmtpEmail:
    """Sends each message in its own SMTP session (notifications are few and far between)."""

    def __init__(self, host: str, port: int, *, sender: str, starttls: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self.password = password
        self.timeout = timeout

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Send one plain-text message; ``DeliveryError`` (retryable unless the server refused it
        permanently, a 5xx) when it does not go through."""
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"the SMTP server answered {exc.smtp_code}", retryable=exc.smtp_code < 500) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(f"the SMTP server refused the recipient ({codes})",
                                retryable=all(code < 500 for code in codes)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP delivery failed: {type(exc).__name__}: {exc}") from exc
