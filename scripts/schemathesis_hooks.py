"""Schemathesis hooks for facteur (loaded by scripts/schemathesis.sh).

`POST /v1/inbound` takes a raw RFC 5322 message as `message/rfc822`, a
media type schemathesis has no serializer for: the generated strings are
sent as they are, like `text/plain`, so the inbound pipeline is fuzzed too.
"""

import schemathesis

schemathesis.serializer.alias("message/rfc822", "text/plain")
