"""Field types that apply the redaction rule (shared/kernel/redaction.py) where text is stored or shown.

* ``FreeText``: text a caller names or describes something with (an org's or API key's name, a
  webhook's description, a reason, a comment). It is stored, shown to every member and audited,
  so a credential pasted into it is replaced on the way in. With length or whitespace
  constraints, put ``RedactOnInput`` after them: ``Annotated[str, StringConstraints(...),
  RedactOnInput]`` (the constraints then judge what the caller sent).
* ``ShownText``, ``ShownData``, ``ShownUrl``: what a response shows of stored values that must stay
  whole where they are used (a run's inputs reach its agent, a webhook's URL is where deliveries
  go): redacted on the way out. ``ShownData`` masks values under secret-named keys too
  (``{"api_token": …}``); ``ShownResult`` only credential shapes and URLs (an agent's outputs,
  where ``tokens`` is as likely a count).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

from shared.kernel.redaction import mask_url, redact, redact_text

RedactOnInput = AfterValidator(redact_text)
FreeText = Annotated[str, RedactOnInput]
ShownText = FreeText  # the same rule, applied when a stored text is shown
ShownUrl = Annotated[str, AfterValidator(mask_url)]
ShownData = Annotated[dict[str, Any], AfterValidator(redact)]
ShownResult = Annotated[dict[str, Any], AfterValidator(lambda value: redact(value, keys=False))]
